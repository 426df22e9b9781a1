"""Search filters (``SearchFilters``) as a condition on the images table, for every kind of search.

The condition names the images table by its name (``images.id``): every query that uses it reads
the table under that name.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from imagesearch.geo import bounding_box
from imagesearch.records import SearchFilters, instant

Condition = tuple[list[str], list]  # clauses (ANDed) and their parameters
CAMERA = "EXISTS (SELECT 1 FROM image_cameras c WHERE c.camera = ? AND c.id = images.id)"  # one lookup per row
TAG = "EXISTS (SELECT 1 FROM image_tags t WHERE t.tag = ? AND t.id = images.id)"


def filter_sql(filters: SearchFilters | None) -> tuple[str, list]:
    """The filters as a WHERE condition on the images table, and its parameters ("1": no filter)."""
    if filters is None:
        return "1", []
    clauses, params = [], []
    for part_clauses, part_params in _conditions(filters):
        clauses += part_clauses
        params += part_params
    if filters.camera_key is not None:
        clauses.append(CAMERA)
        params.append(filters.camera_key)
    for tag in filters.tags or ():
        clauses.append(TAG)
        params.append(tag)
    return " AND ".join(clauses) or "1", params


def _conditions(filters: SearchFilters) -> list[Condition]:
    """One condition per kind of filter but the camera and the tags: the record's own fields, the date, the place
    (NULL, no such metadata, passes neither of the last two)."""
    own: Condition = ([], [])
    if filters.format is not None:
        own[0].append(f"format IN ({','.join('?' * len(filters.format))})")
        own[1].extend(filters.format)
    if filters.source is not None:
        own[0].append("(" + " OR ".join("sources LIKE ?" for _ in filters.source) + ")")
        own[1].extend(f'%"{s}"%' for s in filters.source)
    for field, op in (("min_width", ">="), ("min_height", ">="), ("max_width", "<="), ("max_height", "<=")):
        if (value := getattr(filters, field)) is not None:
            own[0].append(f"{field.split('_')[1]} {op} ?")
            own[1].append(value)
    date: Condition = ([], [])
    for value, clause in ((filters.taken_after, "taken_at >= ?"), (filters.taken_before, "taken_at < ?")):
        if value is not None:
            date[0].append(clause)
            date[1].append(instant(value).timestamp())
    place: Condition = ([], [])
    if filters.near is not None and filters.within_km is not None:
        # The bounding box first: index-friendly comparisons that leave the exact distance few rows.
        south, north, ranges = bounding_box(filters.near.lat, filters.near.lon, filters.within_km)
        place[0].append("latitude BETWEEN ? AND ? AND (" + " OR ".join("longitude BETWEEN ? AND ?" for _ in ranges)
                        + ") AND great_circle_km(latitude, longitude, ?, ?) <= ?")
        place[1].extend([south, north, *(bound for pair in ranges for bound in pair),
                         filters.near.lat, filters.near.lon, filters.within_km])
    return [part for part in (own, date, place) if part[0]]


def filter_mask(db: sqlite3.Connection, filters: SearchFilters, rows: dict[str, int], size: int) -> np.ndarray:
    """Which of ``size`` rows (``rows``: image id -> row) hold images the filters let through.

    One query per kind of filter, each through its own index (the date's, the position's, the
    camera and tag tables' keys), their matches ANDed here: in one query SQLite's planner, which has no
    statistics on how many rows each filter keeps, may start from the wrong index and read the rows."""
    queries = [(f"SELECT id FROM images WHERE {' AND '.join(clauses)}", params) for clauses, params in _conditions(filters)]
    if filters.camera_key is not None:
        queries.append(("SELECT id FROM image_cameras WHERE camera = ?", [filters.camera_key]))
    queries += [("SELECT id FROM image_tags WHERE tag = ?", [tag]) for tag in filters.tags or ()]
    mask = np.ones(size, bool)
    for query, params in queries or [("SELECT id FROM images", [])]:
        found = np.fromiter((row for (image_id,) in db.execute(query, params) if (row := rows.get(image_id)) is not None),
                            np.int64)
        matches = np.zeros(size, bool)
        matches[found[found < size]] = True
        mask &= matches
    return mask
