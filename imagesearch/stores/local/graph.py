"""A model's graph index (``vector_index.py``) from ``index_min_vectors`` vectors on, for models with
one vector per image (BLIP-2's several stay exact): opened from its snapshot beside the database or
built from SQLite, caught up with the writes since, and searched with its candidates rescored with
the exact float32 vectors from SQLite, so the scores are exact and only recall depends on the graph."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from imagesearch.records import SearchFilters
from imagesearch.stores.local.database import HAS_VECTOR, select_in
from imagesearch.stores.local.filters import filter_sql
from imagesearch.stores.local.matrix import top_k
from imagesearch.stores.local.vector_index import MIN_CANDIDATES, RecallProbe, VectorIndex

log = logging.getLogger(__name__)

# A search through the index that finds fewer than k filtered candidates asks for 4x more, up to
# this many (or 8k); past that the filter is so narrow that exact search over its matches is cheap.
MAX_FILTER_CANDIDATES = 4_096
MIN_RECALL = 0.9  # below, a new index warns that these vectors do not suit a graph


def open_index(db: sqlite3.Connection, folder: Path, model: str, dim: int, min_vectors: int) -> VectorIndex | None:
    """The model's saved index, or a new (empty) one, once it has ``min_vectors`` (None: stay exact)."""
    count = db.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (model,)).fetchone()[0]
    if count < min_vectors:  # whatever was saved: the setting decides
        return None
    index = VectorIndex.load(folder, model, dim)
    last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vectors'").fetchone()
    if index is not None and index.seq > (last[0] if last else 0):  # a database restored from an older backup
        log.warning("the vector index of %s is newer than the store (seq %d): it is rebuilt", model, index.seq)
        index = None
    if index is None:
        log.info("building the vector index of %s from %d vectors (once: it is saved beside the store)", model, count)
        index = VectorIndex(dim)
    return index


def catch_up(db: sqlite3.Connection, model: str, index: VectorIndex) -> None:
    """Add the vectors written since the index's last seq (in chunks: a first build reads them all,
    and measures how well the new index finds neighbours)."""
    started, probe = time.monotonic(), RecallProbe() if len(index) == 0 else None
    # "+model": on the seq (rowid) range, as in Matrix.catch_up.
    cursor = db.execute(
        f"SELECT seq, vector FROM vectors WHERE seq > ? AND +model = ? AND {HAS_VECTOR} ORDER BY seq", (index.seq, model))
    while rows := cursor.fetchmany(50_000):
        seqs = np.fromiter((seq for seq, _ in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(blob for _, blob in rows), np.float32).reshape(len(rows), index.dim)
        index.add(seqs, vectors)
        if probe is not None:
            probe.see(seqs, vectors)
    if probe is not None:
        _report_recall(model, index, probe, started)


def _report_recall(model: str, index: VectorIndex, probe: RecallProbe, started: float) -> None:
    recall = probe.recall(index)
    if recall is None:
        return  # too few vectors to say
    log.info("vector index of %s: %d vectors in %.0f s; recall@10 on %d of its own vectors: %.3f",
             model, len(index), time.monotonic() - started, probe.size, recall)
    if recall < MIN_RECALL:
        log.warning("the vector index of %s finds only %.0f%% of the nearest neighbours: these vectors are too evenly "
                    "spread for a graph index (CLIP embeddings are not). For exact search, set "
                    "IMAGESEARCH_LOCAL_INDEX_MIN_VECTORS above %d (slower: each query then reads every vector)",
                    model, 100 * recall, len(index))


def index_search(db: sqlite3.Connection, lock: threading.RLock, index: VectorIndex, model: str, query: np.ndarray,
                 k: int, filters: SearchFilters | None) -> list[tuple[str, float]]:
    """The index's nearest candidates, rescored exactly with the float32 vectors from SQLite. Stale
    keys (replaced or removed vectors) are dropped from the index as they are met. ``lock`` guards
    the index against the searches and updates of other threads."""
    where, params = filter_sql(filters)
    count = max(2 * k, MIN_CANDIDATES)
    while True:
        with lock:
            seqs = index.candidates(query, count)
            size = len(index)
        ids, vectors, found = _rescoring_rows(db, [int(seq) for seq in seqs], where, params)
        stale = [int(seq) for seq in seqs if int(seq) not in found]
        if stale:
            with lock:
                index.remove(stale)
        if len(ids) >= k or count >= size:  # enough, or the whole index was asked for
            break
        if filters is not None and count >= max(MAX_FILTER_CANDIDATES, 8 * k):
            return _exact_filtered(db, model, query, k, where, params)
        count *= 4
    return top_k(ids, np.stack(vectors) @ query if vectors else np.zeros(0, np.float32), k)


def _rescoring_rows(db: sqlite3.Connection, seqs: list[int], where: str,
                    params: list) -> tuple[list[str], list[np.ndarray], set[int]]:
    """The ids and float32 vectors of the candidates that pass the filter, and every seq still in SQLite."""
    # The images table only matters to a filter. A removed image's vectors left the index's keys
    # with it, so without one the join would add nothing but a lookup per candidate.
    rows_from = "vectors v" if where == "1" else "vectors v JOIN images ON images.id = v.id"
    ids, vectors, found = [], [], set()
    for seq, image_id, blob, matches in select_in(
            db, f"SELECT v.seq, v.id, v.vector, ({where}) FROM {rows_from} WHERE v.seq", seqs, params):
        found.add(seq)
        if matches:
            ids.append(image_id)
            vectors.append(np.frombuffer(blob, np.float32))
    return ids, vectors, found


def _exact_filtered(db: sqlite3.Connection, model: str, query: np.ndarray, k: int, where: str,
                    params: list) -> list[tuple[str, float]]:
    """Exact search over the images a narrow filter lets through, their vectors read from SQLite."""
    ids, scores = [], []
    cursor = db.execute(
        f"SELECT v.id, v.vector FROM vectors v JOIN images ON images.id = v.id"
        f" WHERE v.model = ? AND length(v.vector) > 0 AND ({where})", [model, *params])
    while rows := cursor.fetchmany(10_000):
        ids += [image_id for image_id, _ in rows]
        scores.append(np.frombuffer(b"".join(blob for _, blob in rows), np.float32).reshape(len(rows), -1) @ query)
    return top_k(ids, np.concatenate(scores) if scores else np.zeros(0, np.float32), k)
