"""Tags in the local store: each image's tags (in its record, and one row per tag that the tag filter
and the counts read), which tagging gave them (``images.tags_key``), and the embedded images whose
tags are missing or came from another tagging."""

from __future__ import annotations

import sqlite3

import numpy as np

from imagesearch.records import ImageRecord
from imagesearch.stores.local.database import HAS_VECTOR, select_in
from imagesearch.stores.local.keywords import index_keywords


def set_tags(db: sqlite3.Connection, tags: dict[str, list[str]], key: str) -> None:
    """In a transaction: write the tags into the records that exist (others were removed meanwhile)."""
    rows = select_in(db, "SELECT record FROM images WHERE id", list(tags))
    records = [record.model_copy(update={"tags": tags[record.id]})
               for record in (ImageRecord.model_validate_json(r[0]) for r in rows)]
    db.executemany("UPDATE images SET record = ?, tags_key = ? WHERE id = ?", [(r.model_dump_json(), key, r.id) for r in records])
    db.executemany("DELETE FROM image_tags WHERE id = ?", [(r.id,) for r in records])
    db.executemany("INSERT OR IGNORE INTO image_tags (tag, id) VALUES (?, ?)", [(tag, r.id) for r in records for tag in r.tags])
    index_keywords(db, records)  # tags are keywords too


def drop_tags(db: sqlite3.Connection, image_id: str) -> None:
    db.execute("DELETE FROM image_tags WHERE id = ?", (image_id,))


def untagged(db: sqlite3.Connection, model: str, key: str, limit: int, after: str) -> list[tuple[str, np.ndarray]]:
    layout = db.execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone()
    if layout is None or limit <= 0:
        return []
    # From the images' (id, tags_key) index: a collection tagged already is read there, not in its vectors.
    ids = [i for (i,) in db.execute(
        "SELECT id FROM images WHERE id > ? AND (tags_key IS NULL OR tags_key != ?)"
        f" AND EXISTS (SELECT 1 FROM vectors v WHERE v.model = ? AND v.id = images.id AND {HAS_VECTOR}) ORDER BY id LIMIT ?",
        (after, key, model, limit))]
    vectors = dict(select_in(db, "SELECT id, vector FROM vectors WHERE model = ? AND id", ids, (model,)))
    dim, per_image = layout
    shape = (dim,) if per_image == 1 else (per_image, dim)
    return [(i, np.frombuffer(vectors[i], np.float32).reshape(shape).copy()) for i in ids if i in vectors]


def tag_counts(db: sqlite3.Connection, limit: int) -> list[tuple[str, int]]:
    return [(tag, n) for tag, n in db.execute(
        "SELECT tag, count(*) AS n FROM image_tags GROUP BY tag ORDER BY n DESC, tag LIMIT ?", (limit,))]
