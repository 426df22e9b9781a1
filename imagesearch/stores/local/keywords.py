"""Keyword search (mode=text|hybrid): each image's captions, tags and file names in one FTS5 row,
BM25-ranked, and the writes that keep those rows in step with the records."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from imagesearch.records import Hit, ImageRecord, SearchFilters
from imagesearch.stores.base import MAX_K
from imagesearch.stores.local.filters import filter_sql


def keyword_rowid(image_id: str) -> int:
    """The image's row in ``image_keywords``: 63 bits of its sha256 (a collision among a million
    images has odds of about 1 in 10^7)."""
    return int(image_id[:16], 16) >> 1


def index_keywords(db: sqlite3.Connection, records: Sequence[ImageRecord]) -> None:
    """Write the records' keyword rows, replacing what they held."""
    db.executemany("DELETE FROM image_keywords WHERE rowid = ?", [(keyword_rowid(r.id),) for r in records])
    db.executemany("INSERT INTO image_keywords (rowid, id, text) VALUES (?, ?, ?)",
                   [(keyword_rowid(r.id), r.id, r.keyword_text) for r in records])


def drop_keywords(db: sqlite3.Connection, image_id: str) -> None:
    db.execute("DELETE FROM image_keywords WHERE rowid = ?", (keyword_rowid(image_id),))


def keyword_search(db: sqlite3.Connection, text: str, k: int, filters: SearchFilters | None) -> list[Hit]:
    words = re.findall(r"\w+", text.lower())
    if not words or k <= 0:
        return []
    where, params = filter_sql(filters)
    limit = min(k, MAX_K)
    # bm25 gives a word that at least half the captions hold ("a", "the") an IDF of 1e-6 (FTS5
    # clamps ln((N - n + 0.5) / (n + 0.5)) <= 0), yet scores every caption it matches. Without
    # such words the ranking is the same up to ties (scores differ by ~1e-6 per word), so they
    # are left out unless the other words match fewer than k images.
    common = _common_words(db, words)
    informative = [w for w in words if w not in common]
    rows = _best(db, informative, where, params, limit) if 0 < len(informative) < len(words) else []
    if len(rows) < limit:
        rows = _best(db, words, where, params, limit)
    return [Hit(id=i, score=-rank, record=ImageRecord.model_validate_json(r)) for i, r, rank in rows]


def _best(db: sqlite3.Connection, words: list[str], where: str, params: list, limit: int) -> list:
    """The ``limit`` best (id, record, rank) of the images with any of ``words`` that pass the filter."""
    # ORDER BY the `rank` column (bm25 by default), not bm25(): FTS5 then ranks the matches by
    # rowid alone and reads the id, the record and the filter's columns only as the rows are
    # taken, so the LIMIT stops it early. bm25() in ORDER BY reads them for every match first
    # (Performance, "Keyword and hybrid search").
    return db.execute(
        "SELECT images.id, images.record, image_keywords.rank FROM image_keywords"
        " JOIN images ON images.id = image_keywords.id"
        f" WHERE image_keywords MATCH ? AND {where} ORDER BY image_keywords.rank LIMIT ?",
        [" OR ".join(f'"{w}"' for w in words), *params, limit]).fetchall()


def _common_words(db: sqlite3.Connection, words: list[str]) -> set[str]:
    """The words that at least half the captions hold (read from FTS5's index, not from the captions)."""
    captions = db.execute("SELECT count(*) FROM image_keywords_docsize").fetchone()[0]  # FTS5's row count
    held = {w: db.execute("SELECT doc FROM image_keyword_terms WHERE term = ?", (w,)).fetchone() for w in set(words)}
    return {w for w, row in held.items() if row is not None and 2 * row[0] >= captions}
