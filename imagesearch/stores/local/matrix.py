"""Exact search, for a model up to ``index_min_vectors`` vectors or with several vectors per image:
its vectors mirrored into one float32 matrix, caught up with SQLite by row id, and a query is one
matrix-vector product (recall 1.0 by construction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np


class Matrix:
    """The in-memory mirror of one model's vectors: a row per image (its Q vectors side by side)."""

    def __init__(self, dim: int, vectors_per_image: int = 1):
        self.per_image = vectors_per_image
        self.dim = dim * vectors_per_image
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.data = np.zeros((0, self.dim), np.float32)
        self.alive = np.zeros(0, bool)  # False: removed since
        self.dead = 0  # rows not alive (none: searches skip the mask)
        self.last_seq = 0

    def catch_up(self, db: sqlite3.Connection, model: str) -> None:
        """Add what was written since the matrix's last seq."""
        # "+model" keeps SQLite on the seq (rowid) range instead of scanning the (model, id) index:
        # with nothing new, the query then reads no row at all.
        cursor = db.execute("SELECT seq, id, vector FROM vectors WHERE seq > ? AND +model = ? ORDER BY seq",
                            (self.last_seq, model))
        while rows := cursor.fetchmany(50_000):  # in chunks: the rows' bytes never sit in memory beside the matrix
            self.add(rows)

    def add(self, rows: list[tuple[int, str, bytes]]) -> None:
        new_ids = [i for _, i, blob in rows if i not in self.index and blob]
        need = len(self.ids) + len(set(new_ids))
        if need > len(self.data):  # grow geometrically
            size = max(need, 2 * len(self.data), 1024)
            grown = np.zeros((size, self.dim), np.float32)
            grown[: len(self.ids)] = self.data[: len(self.ids)]
            alive = np.zeros(size, bool)
            alive[: len(self.ids)] = self.alive[: len(self.ids)]
            self.data, self.alive = grown, alive
        for seq, image_id, blob in rows:
            self.last_seq = max(self.last_seq, seq)
            row = self.index.get(image_id)
            if not blob:  # removed
                if row is not None and self.alive[row]:
                    self.alive[row] = False
                    self.dead += 1
                continue
            if row is None:
                row = self.index[image_id] = len(self.ids)
                self.ids.append(image_id)
            elif not self.alive[row]:
                self.dead -= 1  # stored and embedded again
            self.data[row] = np.frombuffer(blob, np.float32)
            self.alive[row] = True

    @property
    def vectors(self) -> np.ndarray:
        return self.data[: len(self.ids)]

    @property
    def live(self) -> np.ndarray:
        return self.alive[: len(self.ids)]

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Every row's score for ``query`` (-inf for a removed image)."""
        vectors = self.vectors
        if self.per_image == 1:
            scores = vectors @ query
        else:  # an image scores its best vector (BLIP-2's ITC score): one product, then a max per row
            scores = (vectors.reshape(-1, len(query)) @ query).reshape(len(vectors), self.per_image).max(1)
        if self.dead:
            scores[~self.live] = -np.inf
        return scores


def top_k(ids: Sequence[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k best (id, score) pairs, best first; -inf scores (removed, filtered out) are left out."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    # Equal scores in row order, also across the k-th place: the top k of any k then begins with
    # that of a smaller one (pages rely on it), which argpartition alone does not promise.
    kth = scores[top].min()
    tied = np.flatnonzero(scores == kth)
    if len(tied) > 1:
        above = top[scores[top] > kth]
        top = np.concatenate([above, tied[: k - len(above)]])
    top = top[np.lexsort((top, -scores[top]))]
    return [(ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]
