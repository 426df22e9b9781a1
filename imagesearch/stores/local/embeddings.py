"""The embed worker's queue: each model's layout, the vectors written for each image and the
images that could not be embedded; what is pending is what has neither, and ``counts`` sums it up."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

from imagesearch.records import Counts, ImageRecord
from imagesearch.stores.base import describe_layout, vector_layout
from imagesearch.stores.local.database import HAS_VECTOR, select_in
from imagesearch.stores.local.metadata import missing

NO_RECORD = "no image record with this id"


def ensure_model(db: sqlite3.Connection, model: str, dim: int, vectors_per_image: int) -> None:
    """In a transaction: store the model's layout, or check it against the stored one."""
    row = db.execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone()
    if row and tuple(row) != (dim, vectors_per_image):
        raise ValueError(f"model {model} is stored with {describe_layout(*row)}, not {describe_layout(dim, vectors_per_image)}")
    db.execute("INSERT OR IGNORE INTO models (model, dim, vectors_per_image) VALUES (?, ?, ?)",
               (model, dim, vectors_per_image))


def pending(db: sqlite3.Connection, model: str, limit: int, exclude: Sequence[str]) -> list[ImageRecord]:
    exclude = list(exclude)
    marks = ",".join("?" * len(exclude))
    rows = db.execute(
        "SELECT record FROM images i WHERE"
        f" NOT EXISTS (SELECT 1 FROM vectors v WHERE v.model = ? AND v.id = i.id AND {HAS_VECTOR})"
        " AND NOT EXISTS (SELECT 1 FROM embed_errors e WHERE e.model = ? AND e.id = i.id)"
        + (f" AND i.id NOT IN ({marks})" if exclude else "")
        + " ORDER BY i.rowid LIMIT ?",
        [model, model, *exclude, limit],
    ).fetchall()
    return [ImageRecord.model_validate_json(r[0]) for r in rows]


def set_vectors(db: sqlite3.Connection, model: str, ids: Sequence[str], vectors: np.ndarray) -> dict[str, str]:
    """In a transaction: write the checked ``vectors`` of the ids that have a record, in the model's
    layout (the first write sets it); returns the others, id -> why."""
    given = vector_layout(vectors)
    db.execute("INSERT OR IGNORE INTO models (model, dim, vectors_per_image) VALUES (?, ?, ?)", (model, *given))
    stored = tuple(db.execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone())
    rejected = dict.fromkeys(missing(db, ids), NO_RECORD)
    if given != stored:
        rejected.update(
            {i: f"{describe_layout(*given)}, but model {model} is stored with {describe_layout(*stored)}" for i in ids}
        )
    written = [(i, v) for i, v in zip(ids, vectors, strict=True) if i not in rejected]
    db.executemany("INSERT OR REPLACE INTO vectors (model, id, vector) VALUES (?, ?, ?)",
                   [(model, i, v.tobytes()) for i, v in written])
    db.executemany("DELETE FROM embed_errors WHERE model = ? AND id = ?", [(model, i) for i, _ in written])
    return rejected


def set_embed_errors(db: sqlite3.Connection, model: str, errors: dict[str, str]) -> dict[str, str]:
    """In a transaction: write the errors of the ids that have a record; returns the others, id -> why."""
    absent = missing(db, list(errors))
    db.executemany("INSERT OR REPLACE INTO embed_errors (model, id, reason) VALUES (?,?,?)",
                   [(model, i, r) for i, r in errors.items() if i not in absent])
    return dict.fromkeys(absent, NO_RECORD)


def get_vector(db: sqlite3.Connection, model: str, image_id: str) -> np.ndarray | None:
    row = db.execute(
        "SELECT v.vector, m.dim, m.vectors_per_image FROM vectors v JOIN models m ON m.model = v.model"
        " WHERE v.model = ? AND v.id = ?", (model, image_id)).fetchone()
    if not row or not row[0]:
        return None
    vector = np.frombuffer(row[0], np.float32).copy()
    return vector if row[2] == 1 else vector.reshape(row[2], row[1])


def get_vectors(db: sqlite3.Connection, model: str, ids: list[str]) -> dict[str, np.ndarray]:
    layout = db.execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone()
    if layout is None or not ids:
        return {}
    shape = (-1,) if layout[1] == 1 else (layout[1], layout[0])
    return {image_id: np.frombuffer(blob, np.float32).reshape(shape).copy() for image_id, blob in select_in(
        db, f"SELECT id, vector FROM vectors WHERE model = ? AND {HAS_VECTOR} AND id", ids, [model])}


def counts(db: sqlite3.Connection, model: str) -> Counts:
    images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    rows = db.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (model,)).fetchone()[0]  # the (model, id) index
    removed = db.execute("SELECT COUNT(*) FROM vectors WHERE model = ? AND length(vector) = 0", (model,)).fetchone()[0]
    embedded = rows - removed
    errors = db.execute("SELECT COUNT(*) FROM embed_errors WHERE model = ?", (model,)).fetchone()[0]
    by_reason = dict(db.execute("SELECT reason, COUNT(*) FROM failures GROUP BY reason").fetchall())
    return Counts(images=images, embedded=embedded, pending=max(0, images - embedded - errors),
                  embed_failed=errors, failed_urls=sum(by_reason.values()), failed_by_reason=by_reason)
