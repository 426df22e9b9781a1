"""Removing images, and finding them: a removed image's record and URLs are remembered, so that it
is not downloaded or scanned in again unless asked."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from imagesearch.records import ImageRecord
from imagesearch.stores.local.database import select_in
from imagesearch.stores.local.keywords import drop_keywords
from imagesearch.stores.local.photos import drop_cameras
from imagesearch.stores.local.tags import drop_tags


def remove_images(db: sqlite3.Connection, ids: Sequence[str]) -> list[ImageRecord]:
    """In a transaction: remove the images that are stored; returns their records."""
    removed = []
    for image_id in dict.fromkeys(ids):
        row = db.execute("SELECT record FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            continue
        record = ImageRecord.model_validate_json(row[0])
        db.execute("INSERT OR REPLACE INTO removed (id, record) VALUES (?, ?)", (image_id, row[0]))
        db.executemany("INSERT OR REPLACE INTO removed_urls (url, image_id) VALUES (?, ?)",
                       [(u, image_id) for u in record.urls])
        models = [m for (m,) in db.execute("SELECT model FROM vectors WHERE id = ?", (image_id,))]
        # An empty vector with a new seq, not a deleted row: see database.HAS_VECTOR.
        db.executemany("INSERT OR REPLACE INTO vectors (model, id, vector) VALUES (?, ?, x'')",
                       [(m, image_id) for m in models])
        for table in ("images", "embed_errors"):
            db.execute(f"DELETE FROM {table} WHERE id = ?", (image_id,))
        drop_keywords(db, image_id)
        drop_cameras(db, image_id)
        drop_tags(db, image_id)
        db.execute("DELETE FROM urls WHERE image_id = ?", (image_id,))
        removed.append(record)
    return removed


def removed_urls(db: sqlite3.Connection, urls: Sequence[str]) -> set[str]:
    return {url for (url,) in select_in(db, "SELECT url FROM removed_urls WHERE url", urls)}


def removed_ids(db: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    return {i for (i,) in select_in(db, "SELECT id FROM removed WHERE id", ids)}


def find_ids(db: sqlite3.Connection, url: str | None, folder: str | None) -> list[str]:
    """Ids of the stored or removed images with this URL, or with a file under this folder."""
    if url is not None:
        return [r[0] for r in db.execute("SELECT image_id FROM urls WHERE url = ? UNION "
                                         "SELECT image_id FROM removed_urls WHERE url = ?", (url, url))]
    prefix = str(folder).rstrip("/") + "/"
    query = ("SELECT id FROM {table} WHERE EXISTS (SELECT 1 FROM json_each(json_extract(record, '$.paths')) "
             "WHERE substr(value, 1, ?) = ?)")
    return [r[0] for table in ("images", "removed")
            for r in db.execute(query.format(table=table), (len(prefix), prefix))]
