"""Image records, the URLs that have an image, and the URLs that gave none (failures)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from imagesearch.records import ImageRecord, UrlFailure
from imagesearch.stores.local.database import select_in
from imagesearch.stores.local.keywords import index_keywords
from imagesearch.stores.local.photos import index_cameras, photo_columns


def upsert_images(db: sqlite3.Connection, records: Sequence[ImageRecord]) -> list[bool]:
    """In a transaction: insert or merge the records; True where the id was new."""
    # Set-wise statements, not several per record: the downloader writes records as fast as it fetches them.
    created, merged = [], dict[str, ImageRecord]()
    stored = get_many(db, list({r.id: None for r in records}))
    for record in records:  # the same image twice in a batch merges like across batches
        before = merged.get(record.id) or stored.get(record.id)
        created.append(before is None)
        merged[record.id] = before.merge(record) if before else record
    rows = list(merged.values())
    urls = [(url, r.id) for r in rows for url in r.urls]
    db.executemany(
        "INSERT INTO images (id, record, format, width, height, sources, taken_at, latitude, longitude, photo_read)"
        " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET record = excluded.record, sources = excluded.sources,"
        " taken_at = excluded.taken_at, latitude = excluded.latitude, longitude = excluded.longitude,"
        " photo_read = excluded.photo_read",
        [(r.id, r.model_dump_json(), r.format, r.width, r.height, json.dumps(r.sources), *photo_columns(r)) for r in rows],
    )
    db.executemany("INSERT OR REPLACE INTO urls (url, image_id) VALUES (?, ?)", urls)
    db.executemany("DELETE FROM failures WHERE url = ?", [(url,) for url, _ in urls])
    index_keywords(db, rows)
    index_cameras(db, rows)
    db.executemany("DELETE FROM removed WHERE id = ?", [(r.id,) for r in rows])  # stored again on purpose
    db.executemany("DELETE FROM removed_urls WHERE url = ?", [(url,) for url, _ in urls])
    return created


def record_failures(db: sqlite3.Connection, failures: Sequence[UrlFailure]) -> None:
    """In a transaction: remember the failures, their attempts added to the URL's earlier ones."""
    for failure in failures:
        row = db.execute("SELECT record FROM failures WHERE url = ?", (failure.url,)).fetchone()
        if row:
            failure = failure.model_copy(update={"attempts": UrlFailure.model_validate_json(row[0]).attempts + failure.attempts})
        db.execute("INSERT OR REPLACE INTO failures (url, record, reason) VALUES (?,?,?)",
                   (failure.url, failure.model_dump_json(), failure.reason))


def failures(db: sqlite3.Connection) -> list[UrlFailure]:
    rows = db.execute("SELECT record FROM failures ORDER BY url").fetchall()
    return [UrlFailure.model_validate_json(r[0]) for r in rows]


def known_urls(db: sqlite3.Connection, urls: Sequence[str]) -> set[str]:
    return {url for (url,) in select_in(db, "SELECT url FROM urls WHERE url", urls)}


def get(db: sqlite3.Connection, image_id: str) -> ImageRecord | None:
    row = db.execute("SELECT record FROM images WHERE id = ?", (image_id,)).fetchone()
    return ImageRecord.model_validate_json(row[0]) if row else None


def get_many(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, ImageRecord]:
    """id -> record of those of ``ids`` that have one."""
    return {i: ImageRecord.model_validate_json(r) for i, r in select_in(db, "SELECT id, record FROM images WHERE id", ids)}


def missing(db: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` that have no image record."""
    unique = list(dict.fromkeys(ids))
    return set(unique) - {i for (i,) in select_in(db, "SELECT id FROM images WHERE id", unique)}
