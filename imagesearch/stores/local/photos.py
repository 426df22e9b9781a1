"""Photo metadata in the local store: the images table's copies of it that filters read (date,
position), each image's camera names, and the records whose metadata was never read."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from imagesearch.records import ImageRecord, PhotoMetadata, instant
from imagesearch.stores.local.database import select_in


def photo_columns(record: ImageRecord) -> tuple[float | None, float | None, float | None, int]:
    """(taken_at, latitude, longitude, photo_read) of the images table for ``record``."""
    photo = record.photo
    if photo is None:
        return None, None, None, 0
    taken = instant(photo.taken_at).timestamp() if photo.taken_at else None
    where = photo.location
    return taken, where.lat if where else None, where.lon if where else None, 1


def index_cameras(db: sqlite3.Connection, records: Sequence[ImageRecord]) -> None:
    """Write the records' camera names, replacing what they held."""
    db.executemany("DELETE FROM image_cameras WHERE id = ?", [(r.id,) for r in records])
    db.executemany("INSERT OR IGNORE INTO image_cameras (camera, id) VALUES (?, ?)",
                   [(camera, r.id) for r in records if r.photo for camera in r.photo.cameras])


def drop_cameras(db: sqlite3.Connection, image_id: str) -> None:
    db.execute("DELETE FROM image_cameras WHERE id = ?", (image_id,))


def unread(db: sqlite3.Connection, limit: int, after: str) -> list[ImageRecord]:
    rows = db.execute("SELECT record FROM images WHERE photo_read = 0 AND id > ? ORDER BY id LIMIT ?", (after, limit))
    return [ImageRecord.model_validate_json(r[0]) for r in rows]


def set_photo_metadata(db: sqlite3.Connection, metadata: dict[str, PhotoMetadata]) -> None:
    """In a transaction: write the metadata into the records that exist (others were removed meanwhile)."""
    rows = select_in(db, "SELECT record FROM images WHERE id", list(metadata))
    records = [record.model_copy(update={"photo": metadata[record.id]})
               for record in (ImageRecord.model_validate_json(r[0]) for r in rows)]
    db.executemany("UPDATE images SET record = ?, taken_at = ?, latitude = ?, longitude = ?, photo_read = ? WHERE id = ?",
                   [(r.model_dump_json(), *photo_columns(r), r.id) for r in records])
    index_cameras(db, records)
