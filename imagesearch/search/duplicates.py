"""Near-duplicates: groups of near-identical images, and search results with each group's best only.

Exact copies are one record already (an image's id is the hash of its bytes); near-duplicates are
the copies that differ in bytes: re-encoded, resized, slightly cropped. Two images are near-duplicates
when their vectors' cosine is at least a threshold; the store finds those pairs through its kNN
(``VectorStore.near_pairs``), and a group is a connected component of them (union-find): a chain of
near-duplicates is one group, even where its two ends are further apart than the threshold.

``collapse`` keeps search results apart the same way: a result whose vector is within the threshold of
a better result already kept is left out, and deeper results fill the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from imagesearch.records import MAX_K
from imagesearch.stores import query_vector

BLOCK = 512  # rows of a similarity product at a time: bounded memory for a deep window


class DuplicateGroup(BaseModel):
    ids: list[str] = Field(description="the images of the group, by id")
    min_score: float = Field(description="the lowest cosine among the pairs that joined the group (the ends of a chain "
                                         "of near-duplicates can be further apart)")


class DuplicatesResponse(BaseModel):
    model: str
    threshold: float = Field(description="the cosine at or above which two images are near-duplicates")
    groups: list[DuplicateGroup] = Field(description="largest first")
    took_ms: float


def group_pairs(pairs: Iterable[tuple[str, str, float]]) -> list[DuplicateGroup]:
    """The connected components of the pairs (a, b, score), by union-find: each group's ids sorted,
    the largest group first (then the closest, then by first id)."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving: later finds are shorter
            node = parent[node]
        return node

    lowest: dict[str, float] = {}
    scored = list(pairs)
    for a, b, _ in scored:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    for a, _, score in scored:
        top = root(a)
        lowest[top] = min(lowest.get(top, score), score)
    members: dict[str, list[str]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    groups = [DuplicateGroup(ids=sorted(ids), min_score=round(lowest[top], 6)) for top, ids in members.items()]
    return sorted(groups, key=lambda g: (-len(g.ids), -g.min_score, g.ids[0]))


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=HasId)


def keep_best(items: Sequence[Item], vectors: Mapping[str, np.ndarray], threshold: float) -> list[Item]:
    """``items`` (best first) without those whose vector is at ``threshold`` or above to an earlier
    item kept; an item without a vector (not embedded with the model) is kept and hides nothing."""
    rows = [i for i, item in enumerate(items) if item.id in vectors]
    if not rows:
        return list(items)
    matrix = np.stack([query_vector(vectors[items[i].id]) for i in rows])
    later, earlier = [], []  # the pairs of rows at or above the threshold: (a row, an earlier row)
    for start in range(0, len(rows), BLOCK):
        near_rows, near_columns = np.nonzero(matrix[start : start + BLOCK] @ matrix[: start + BLOCK].T >= threshold)
        near_rows += start
        before = near_columns < near_rows
        later.append(near_rows[before])
        earlier.append(near_columns[before])
    near_earlier: dict[int, list[int]] = {}
    for row, column in zip(np.concatenate(later).tolist(), np.concatenate(earlier).tolist(), strict=True):
        near_earlier.setdefault(row, []).append(column)
    kept = np.ones(len(rows), bool)
    for row in sorted(near_earlier):  # in rank order: whether each earlier row is kept is settled
        kept[row] = not kept[near_earlier[row]].any()
    dropped = {rows[row] for row in np.flatnonzero(~kept)}
    return [item for i, item in enumerate(items) if i not in dropped]


def collapsed(fetch: Callable[[int], Sequence[Item]], need: int,
              vectors_of: Callable[[list[str]], Mapping[str, np.ndarray]], threshold: float) -> list[Item]:
    """The best ``need`` of ``fetch(depth)``'s ranking (best first) once near-duplicates of better
    items are left out: the ranking is asked deeper until enough are left or it has no more. Greedy
    from the best, so a deeper ranking keeps the same first items: pages stay consistent."""
    # A little deeper than needed from the start, so that what collapse leaves out is mostly made
    # up within the first ranking; after that, deeper by the share it left out, with a margin.
    asked, vectors = min(MAX_K, need + need // 4 + 10), {}
    while True:
        found = fetch(asked)
        if missing := [item.id for item in found if item.id not in vectors]:
            vectors.update({i: None for i in missing} | dict(vectors_of(missing)))
        kept = keep_best(found, {i: v for i, v in vectors.items() if v is not None}, threshold)
        if len(kept) >= need or len(found) < asked or asked >= MAX_K:
            return kept[:need]
        asked = min(MAX_K, max(asked + 10, int(1.25 * asked * need / max(len(kept), 1))))
