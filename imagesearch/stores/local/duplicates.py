"""Near pairs in the local store (``VectorStore.near_pairs``): through a model's graph index, or
exactly over its matrix.

Through the graph index the model's vectors are read from SQLite a chunk at a time; each chunk is one
batch search of the index on every core, and the candidates are rescored with their exact float32
vectors (the chunk's own, the others read by seq), so scores are exact and only recall depends on the
graph. Memory stays a chunk's worth, whatever the collection's size.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np

from imagesearch.stores.local.database import HAS_VECTOR, select_in
from imagesearch.stores.local.matrix import Matrix
from imagesearch.stores.local.vector_index import VectorIndex
from imagesearch.stores.pairs import Pair, Pairs, exact_pairs

CHUNK = 2_048  # queries per batch search: its candidates' vectors ([chunk, neighbours, dim]) stay tens of MB
# The graph's search breadth here: a near-duplicate is far closer to its image than the other
# neighbours are, so a narrower search than a text query's finds it (bench_duplicates measures recall).
EXPANSION = 64


def index_pairs(db: sqlite3.Connection, lock: threading.RLock, index: VectorIndex, model: str, threshold: float,
                neighbours: int) -> list[Pair]:
    """Each image's up to ``neighbours`` nearest at or above ``threshold``, through the graph index."""
    found, last = Pairs(), 0
    while rows := db.execute(f"SELECT seq, id, vector FROM vectors WHERE seq > ? AND +model = ? AND {HAS_VECTOR}"
                             " ORDER BY seq LIMIT ?", (last, model, CHUNK)).fetchall():
        last = rows[-1][0]
        seqs = np.fromiter((seq for seq, _, _ in rows), np.int64, len(rows))
        queries = np.frombuffer(b"".join(blob for _, _, blob in rows), np.float32).reshape(len(rows), index.dim)
        with lock:  # one batch at a time: searches of other threads go on between them
            nearest = index.nearest(queries, neighbours + 1, EXPANSION)  # +1: the image itself is among them
        ids = [image_id for _, image_id, _ in rows]
        known_seqs, known_ids, known_vectors = _with_candidates(db, lock, index, seqs, ids, queries, nearest)
        at = np.searchsorted(known_seqs, nearest).clip(0, len(known_seqs) - 1)
        valid = (known_seqs[at] == nearest) & (nearest != seqs[:, None])  # in SQLite still, and not the image itself
        scores = np.einsum("bd,bkd->bk", queries, known_vectors[at])
        near = valid & (scores >= threshold)
        for row in np.flatnonzero(near.any(axis=1)):
            columns = np.flatnonzero(near[row])
            best = columns[np.argsort(-scores[row, columns], kind="stable")[:neighbours]]
            found.add(ids[row], ((known_ids[at[row, c]], float(scores[row, c])) for c in best))
    return found.sorted()


def _with_candidates(db: sqlite3.Connection, lock: threading.RLock, index: VectorIndex, seqs: np.ndarray, ids: list[str],
                     vectors: np.ndarray, nearest: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The chunk's rows and those of its candidates (read from SQLite), sorted by seq: (seqs, ids,
    vectors). Candidates whose row is gone (replaced or removed vectors) leave the index."""
    wanted = np.setdiff1d(nearest[nearest >= 0], seqs).tolist()
    more = [(seq, image_id, blob) for seq, image_id, blob in select_in(
        db, f"SELECT seq, id, vector FROM vectors WHERE {HAS_VECTOR} AND seq", wanted)]
    if stale := sorted(set(wanted) - {seq for seq, _, _ in more}):
        with lock:
            index.remove(stale)
    all_seqs = np.concatenate([seqs, np.fromiter((seq for seq, _, _ in more), np.int64, len(more))])
    all_ids = ids + [image_id for _, image_id, _ in more]
    extra = np.frombuffer(b"".join(blob for _, _, blob in more), np.float32).reshape(len(more), vectors.shape[1])
    order = np.argsort(all_seqs)
    return all_seqs[order], [all_ids[i] for i in order], np.concatenate([vectors, extra])[order]


def matrix_pairs(matrix: Matrix, lock: threading.RLock, threshold: float, neighbours: int) -> list[Pair]:
    """Exact near pairs over the matrix (a copy of its live rows: searches go on meanwhile). Several
    vectors per image: compared by their normalized mean, the image's query vector."""
    with lock:
        live = matrix.live.copy()
        ids = [image_id for image_id, alive in zip(matrix.ids, live, strict=True) if alive]
        vectors = matrix.vectors[live]
    if matrix.per_image > 1:
        vectors = vectors.reshape(len(ids), matrix.per_image, -1).mean(axis=1)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return exact_pairs(ids, np.ascontiguousarray(vectors, np.float32), threshold, neighbours)
