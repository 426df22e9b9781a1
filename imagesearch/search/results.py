"""What a search returns: the response and its results, as the API and the CLI's --json show them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from imagesearch.records import GeoPoint, Hit


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
    taken_at: datetime | None = Field(None, description="when the photo was taken (EXIF): with its UTC offset where the "
                                      "camera wrote one, else the camera's local time")
    camera: str | None = Field(None, description="the camera's make and model (EXIF)")
    location: GeoPoint | None = Field(None, description="where the photo was taken (EXIF GPS)")
    tags: list[str] = Field(default_factory=list, description="the labels of the tag vocabulary that fit it best, best first")


class SearchResponse(BaseModel):
    query: dict
    model: str
    took_ms: float
    results: list[SearchResult]
    next_offset: int | None = Field(None, description="the offset of the next page (ask again with it); null: this is the last")


def to_result(hit: Hit, matched: Sequence[str] = ("vector",), image_base: str = "/images/") -> SearchResult:
    r = hit.record
    return SearchResult(
        id=hit.id, score=round(float(hit.score), 6), url=r.url, image_url=f"{image_base}{hit.id}",
        width=r.width, height=r.height, format=r.format, captions=r.captions, urls=r.urls, sources=list(r.sources),
        matched=list(matched), taken_at=r.photo.taken_at if r.photo else None, camera=r.photo.camera if r.photo else None,
        location=r.photo.location if r.photo else None, tags=list(r.tags),
    )
