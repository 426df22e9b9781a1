"""Search filters (``SearchFilters``) as a condition on the images table, for every kind of search."""

from __future__ import annotations

import sqlite3

import numpy as np

from imagesearch.records import SearchFilters


def filter_sql(filters: SearchFilters | None) -> tuple[str, list]:
    """The filters as a WHERE condition on the images table, and its parameters ("1": no filter)."""
    if filters is None:
        return "1", []
    clauses, params = [], []
    if filters.format is not None:
        clauses.append(f"format IN ({','.join('?' * len(filters.format))})")
        params += filters.format
    if filters.source is not None:
        clauses.append("(" + " OR ".join("sources LIKE ?" for _ in filters.source) + ")")
        params += [f'%"{s}"%' for s in filters.source]
    for field, op in (("min_width", ">="), ("min_height", ">="), ("max_width", "<="), ("max_height", "<=")):
        value = getattr(filters, field)
        if value is not None:
            clauses.append(f"{field.split('_')[1]} {op} ?")
            params.append(value)
    return " AND ".join(clauses) or "1", params


def filter_mask(db: sqlite3.Connection, filters: SearchFilters, rows: dict[str, int], size: int) -> np.ndarray:
    """Which of ``size`` rows (``rows``: image id -> row) hold images the filters let through."""
    where, params = filter_sql(filters)
    mask = np.zeros(size, bool)
    for (image_id,) in db.execute(f"SELECT id FROM images WHERE {where}", params):
        row = rows.get(image_id)
        if row is not None and row < size:
            mask[row] = True
    return mask
