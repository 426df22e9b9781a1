"""Near pairs (``VectorStore.near_pairs``) as both stores build them: from one image's nearest
neighbours, or exactly over vectors held in memory (the local store's exact matrix; images with
several vectors, compared by their query vectors)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Rows of the exact product at a time: a block's scores against a whole collection stay a few
# hundred MB at most, and each block is one large matrix product (what BLAS does fastest).
BLOCK = 256

Pair = tuple[str, str, float]


def pair(a: str, b: str, score: float) -> Pair:
    """The pair in the contract's order: the smaller id first."""
    return (a, b, score) if a < b else (b, a, score)


class Pairs:
    """Pairs collected from many neighbour lists, each kept once."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], float] = {}

    def add(self, image_id: str, neighbours: Iterable[tuple[str, float]]) -> None:
        """``image_id``'s neighbours (id, score) at or above the threshold (itself among them is skipped)."""
        for other, score in neighbours:
            if other != image_id:
                a, b, _ = pair(image_id, other, score)
                self.found[(a, b)] = max(score, self.found.get((a, b), score))

    def sorted(self) -> list[Pair]:
        return [(a, b, score) for (a, b), score in sorted(self.found.items())]


def exact_pairs(ids: Sequence[str], vectors: np.ndarray, threshold: float, neighbours: int) -> list[Pair]:
    """Exact near pairs of unit vectors ([N, D], a row per id): each image's up to ``neighbours``
    most similar later rows at or above ``threshold``. Each block of rows is compared with itself and
    the rows after it (the product is symmetric); within a group larger than ``neighbours`` every
    member still joins a later one, so the group stays connected."""
    found: list[Pair] = []
    for start in range(0, len(ids), BLOCK):
        scores = vectors[start : start + BLOCK] @ vectors[start:].T
        rows, columns = np.nonzero(scores >= threshold)
        later = columns > rows  # column c is row start + c: only the rows after this one
        rows, columns = rows[later], columns[later]
        values = scores[rows, columns]
        order = np.lexsort((-values, rows))  # by row, the most similar first
        rows, columns, values = rows[order], columns[order], values[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # place within its row
        found += [pair(ids[start + r], ids[start + c], float(v))
                  for r, c, v in zip(rows[rank < neighbours], columns[rank < neighbours], values[rank < neighbours], strict=True)]
    return sorted(found)
