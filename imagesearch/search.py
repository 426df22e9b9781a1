"""Search: query (text, image bytes, or a stored image id) -> encoder -> vector store -> results.

The API, the CLI and the UI (through the API) all search through ``SearchService``.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from imagesearch.config import Settings
from imagesearch.encoders import Encoder, make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import Hit, SearchFilters
from imagesearch.stores import VectorStore, make_store


class QueryError(ValueError):
    """The query itself is unusable (unknown image id, image without a vector...): a 4xx."""


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


class SearchResponse(BaseModel):
    query: dict
    model: str
    took_ms: float
    results: list[SearchResult]


def to_result(hit: Hit, image_base: str = "/images/") -> SearchResult:
    r = hit.record
    return SearchResult(
        id=hit.id, score=round(float(hit.score), 6), url=r.url, image_url=f"{image_base}{hit.id}",
        width=r.width, height=r.height, format=r.format, captions=r.captions, urls=r.urls, sources=list(r.sources),
    )


class SearchService:
    def __init__(self, settings: Settings, encoder: Encoder | None = None, store: VectorStore | None = None):
        self.settings = settings
        self.encoder = encoder or make_encoder(settings)
        self.card = self.encoder.card
        self.store = store or make_store(settings)

    @property
    def model(self) -> str:
        return self.card.slug

    def text_vector(self, text: str) -> np.ndarray:
        return self.encoder.encode_texts([text])[0]

    def image_vector(self, data: bytes) -> np.ndarray:
        pixels = prepare(data, self.card, max_pixels=self.settings.max_image_pixels, draft=self.settings.jpeg_draft)
        return self.encoder.encode_images(pixels[None])[0]

    def id_vector(self, image_id: str) -> np.ndarray:
        vector = self.store.get_vector(self.model, image_id)
        if vector is None:
            if self.store.get(image_id) is None:
                raise QueryError(f"no image with id {image_id}")
            raise QueryError(f"image {image_id} has no vector for model {self.model} yet (still pending)")
        return vector

    def search_vector(
        self, vector: np.ndarray, query: dict, k: int = 10,
        filters: SearchFilters | None = None, min_score: float | None = None, started: float | None = None,
    ) -> SearchResponse:
        started = started or time.perf_counter()
        hits = self.store.search(self.model, vector, k, filters, min_score)
        return SearchResponse(
            query=query, model=self.model, took_ms=round((time.perf_counter() - started) * 1000, 2),
            results=[to_result(h) for h in hits],
        )

    def search_text(self, text: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None) -> SearchResponse:
        started = time.perf_counter()
        return self.search_vector(self.text_vector(text), {"text": text}, k, filters, min_score, started)

    def search_image(self, data: bytes, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None, query: dict | None = None) -> SearchResponse:
        started = time.perf_counter()
        return self.search_vector(self.image_vector(data), query or {"image": f"{len(data)} bytes"}, k, filters, min_score, started)

    def search_id(self, image_id: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None) -> SearchResponse:
        started = time.perf_counter()
        return self.search_vector(self.id_vector(image_id), {"image_id": image_id}, k, filters, min_score, started)

    def close(self) -> None:
        self.encoder.close()
        self.store.close()
