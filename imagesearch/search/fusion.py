"""Hybrid search: the vector and keyword rankings fused by reciprocal rank."""

from __future__ import annotations

from imagesearch.records import Hit
from imagesearch.search.results import SearchResult, to_result

RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): a rank r adds 1 / (60 + r)


def fuse(vector_hits: list[Hit], text_hits: list[Hit], k: int) -> list[SearchResult]:
    """Reciprocal rank fusion of the two rankings; the score is the fused one."""
    scores: dict[str, float] = {}
    found: dict[str, tuple[Hit, list[str]]] = {}
    for part, hits in (("vector", vector_hits), ("text", text_hits)):
        for rank, hit in enumerate(hits, 1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + rank)
            found.setdefault(hit.id, (hit, []))[1].append(part)
    best = sorted(scores, key=lambda i: -scores[i])[:k]
    return [to_result(found[i][0].model_copy(update={"score": scores[i]}), found[i][1]) for i in best]
