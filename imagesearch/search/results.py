"""What a search returns: the response and its results, as the API and the CLI's --json show them."""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field

from imagesearch.records import Hit


class SearchResult(BaseModel):
    id: str
    score: float
    url: str | None
    image_url: str
    width: int
    height: int
    format: str
    captions: list[str]
    urls: list[str]
    sources: list[str]
    matched: list[str] = Field(default_factory=lambda: ["vector"],
                               description="which part found it: 'vector' (its meaning), 'text' (its words), or both")


class SearchResponse(BaseModel):
    query: dict
    model: str
    took_ms: float
    results: list[SearchResult]


def to_result(hit: Hit, matched: Sequence[str] = ("vector",), image_base: str = "/images/") -> SearchResult:
    r = hit.record
    return SearchResult(
        id=hit.id, score=round(float(hit.score), 6), url=r.url, image_url=f"{image_base}{hit.id}",
        width=r.width, height=r.height, format=r.format, captions=r.captions, urls=r.urls, sources=list(r.sources),
        matched=list(matched),
    )
