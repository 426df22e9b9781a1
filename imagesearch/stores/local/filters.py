"""Search filters (``SearchFilters``) as a condition on the images table, for every kind of search.

The condition names the images table by its name (``images.id``): every query that uses it reads
the table under that name.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from imagesearch.geo import bounding_box
from imagesearch.records import SearchFilters, instant


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
    photo_clauses, photo_params = _photo_sql(filters)
    return " AND ".join(clauses + photo_clauses) or "1", params + photo_params


def _photo_sql(filters: SearchFilters) -> tuple[list[str], list]:
    """The date, camera and place filters (NULL, no such metadata, passes none of them)."""
    clauses: list[str] = []
    params: list = []
    if filters.taken_after is not None:
        clauses.append("taken_at >= ?")
        params.append(instant(filters.taken_after).timestamp())
    if filters.taken_before is not None:
        clauses.append("taken_at < ?")
        params.append(instant(filters.taken_before).timestamp())
    if filters.camera_key is not None:
        clauses.append("images.id IN (SELECT id FROM image_cameras WHERE camera = ?)")
        params.append(filters.camera_key)
    if filters.near is not None and filters.within_km is not None:
        # The bounding box first: index-friendly comparisons that leave the exact distance few rows.
        south, north, ranges = bounding_box(filters.near.lat, filters.near.lon, filters.within_km)
        clauses.append("latitude BETWEEN ? AND ? AND (" + " OR ".join("longitude BETWEEN ? AND ?" for _ in ranges)
                       + ") AND great_circle_km(latitude, longitude, ?, ?) <= ?")
        params += [south, north, *(bound for pair in ranges for bound in pair),
                   filters.near.lat, filters.near.lon, filters.within_km]
    return clauses, params


def filter_mask(db: sqlite3.Connection, filters: SearchFilters, rows: dict[str, int], size: int) -> np.ndarray:
    """Which of ``size`` rows (``rows``: image id -> row) hold images the filters let through."""
    where, params = filter_sql(filters)
    mask = np.zeros(size, bool)
    for (image_id,) in db.execute(f"SELECT id FROM images WHERE {where}", params):
        row = rows.get(image_id)
        if row is not None and row < size:
            mask[row] = True
    return mask
