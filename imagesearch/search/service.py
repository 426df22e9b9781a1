"""``SearchService``: a query (text, image bytes, or a stored image id) -> encoder -> vector store -> results."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import numpy as np

from imagesearch.config import Settings
from imagesearch.encoders import Encoder, make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import Hit, SearchFilters, is_image_id
from imagesearch.search import order
from imagesearch.search.batcher import TextBatcher
from imagesearch.search.cache import VectorCache
from imagesearch.search.fusion import fuse
from imagesearch.search.query import Mode, QueryError, Sort, check_page
from imagesearch.search.results import SearchResponse, SearchResult, to_result
from imagesearch.stores import MAX_K, VectorStore, make_store, query_vector


def _taken_at(item: Hit | SearchResult) -> datetime | None:
    if isinstance(item, SearchResult):
        return item.taken_at
    return item.record.photo.taken_at if item.record.photo else None


class SearchService:
    def __init__(self, settings: Settings, encoder: Encoder | None = None, store: VectorStore | None = None):
        self.settings = settings
        self.encoder = encoder or make_encoder(settings)
        self.card = self.encoder.card
        self.store = store or make_store(settings)
        self.text_cache = VectorCache(settings.text_cache_size)
        self._batcher: TextBatcher | None = None
        self._batcher_lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.card.slug

    @property
    def batcher(self) -> TextBatcher:
        """Started on first use, so one-shot users (the CLI) never start a thread."""
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = TextBatcher(
                    self.encoder.encode_texts, self.settings.text_batch_max, self.settings.text_batch_wait_ms / 1000)
            return self._batcher

    # --- validation (one place for the CLI and the API) ------------------------------------------

    def check_k(self, k: int, offset: int = 0) -> None:
        """k within ``max_k``, and the page (``offset``) within the stores' reach."""
        check_page(k, offset, self.settings.max_k)

    def check_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise QueryError("the query text is empty")
        if len(text) > self.settings.max_query_chars:
            raise QueryError(f"the query text is {len(text)} characters long; the limit is {self.settings.max_query_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryError("the query text is not valid Unicode (lone surrogate)") from None
        return text

    # --- query vectors ---------------------------------------------------------------------------

    def text_vector(self, text: str) -> np.ndarray:
        text = self.check_text(text)
        vector = self.text_cache.get(text)
        if vector is None:
            vector = self.batcher.encode(text)
            self.text_cache.put(text, vector)
        return vector

    def image_vector(self, data: bytes) -> np.ndarray:
        pixels = prepare(data, self.card, max_pixels=self.settings.max_image_pixels, draft=self.settings.jpeg_draft)
        return query_vector(self.encoder.encode_images(pixels[None])[0])

    def id_vector(self, image_id: str) -> np.ndarray:
        if not is_image_id(image_id):
            raise QueryError(f"not an image id (64 lower-case hex characters): {image_id[:80]!r}")
        vector = self.store.get_vector(self.model, image_id)
        if vector is None:
            if self.store.get(image_id) is None:
                raise QueryError(f"no image with id {image_id}", "not_found")
            raise QueryError(f"image {image_id} has no vector for model {self.model} yet (still pending)", "pending")
        return query_vector(vector)

    # --- searches ----------------------------------------------------------------------------------

    def search_vector(
        self, vector: np.ndarray, query: dict, k: int = 10, filters: SearchFilters | None = None,
        min_score: float | None = None, started: float | None = None, *, sort: Sort = "relevance", offset: int = 0,
    ) -> SearchResponse:
        """The page of ``k`` results from ``offset`` in ``sort`` order (imagesearch/search/order.py)."""
        started = started or time.perf_counter()
        self.check_k(k, offset)
        hits = self.store.search(self.model, vector, self._depth(sort, offset, k), filters, min_score)
        return self._respond(query, hits, sort, offset, k, started)

    def search_text(self, text: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                    mode: Mode = "vector", *, sort: Sort = "relevance", offset: int = 0) -> SearchResponse:
        """``vector``: by meaning (CLIP); ``text``: by the words of captions, tags and file names (BM25);
        ``hybrid``: both, fused by reciprocal rank (``min_score`` then applies to the vector part)."""
        started = time.perf_counter()
        self.check_k(k, offset)
        if mode == "vector":
            return self.search_vector(self.text_vector(text), {"text": text}, k, filters, min_score, started,
                                      sort=sort, offset=offset)
        text = self.check_text(text)
        query = {"text": text, "mode": mode}
        depth = self._depth(sort, offset, k)
        if mode == "text":
            return self._respond(query, self.store.keyword_search(text, depth, filters), sort, offset, k, started, ["text"])
        ranked = offset + k if sort == "relevance" else depth  # the fused ranking that decides the page
        candidates = min(max(4 * ranked, 50), MAX_K)  # deep enough that a match of either part gets both chances
        vector_hits = self.store.search(self.model, self.text_vector(text), candidates, filters, min_score)
        return self._respond(query, fuse(vector_hits, self.store.keyword_search(text, candidates, filters), depth),
                             sort, offset, k, started)

    def search_image(self, data: bytes, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                     query: dict | None = None, *, sort: Sort = "relevance", offset: int = 0) -> SearchResponse:
        started = time.perf_counter()
        self.check_k(k, offset)
        return self.search_vector(self.image_vector(data), query or {"image": f"{len(data)} bytes"}, k, filters, min_score,
                                  started, sort=sort, offset=offset)

    def search_id(self, image_id: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                  *, sort: Sort = "relevance", offset: int = 0) -> SearchResponse:
        started = time.perf_counter()
        self.check_k(k, offset)
        return self.search_vector(self.id_vector(image_id), {"image_id": image_id}, k, filters, min_score, started,
                                  sort=sort, offset=offset)

    def _depth(self, sort: Sort, offset: int, k: int) -> int:
        return order.depth(sort, offset, k, self.settings.sort_window)

    def _respond(self, query: dict, found: list[Hit] | list[SearchResult], sort: Sort, offset: int, k: int, started: float,
                 matched: list[str] | None = None) -> SearchResponse:
        """The page of ``found`` (hits, or fused results) as the response, the query with its page and order."""
        chosen, next_offset = order.page(list[Hit | SearchResult](found), sort, offset, k, _taken_at)
        results = [item if isinstance(item, SearchResult) else to_result(item, matched or ["vector"]) for item in chosen]
        page = {**({"sort": sort} if sort != "relevance" else {}), **({"offset": offset} if offset else {})}
        return SearchResponse(query={**query, **page}, model=self.model, results=results, next_offset=next_offset,
                              took_ms=round((time.perf_counter() - started) * 1000, 2))

    def stats(self) -> dict:
        """Text cache and micro-batching counters (for /status and the benchmark)."""
        batcher = self._batcher
        return {"cache_size": len(self.text_cache), "cache_hits": self.text_cache.hits,
                "cache_misses": self.text_cache.misses, "encoder_calls": batcher.batches if batcher else 0,
                "texts_encoded": batcher.texts if batcher else 0}

    def stop_batcher(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def close(self) -> None:
        self.stop_batcher()
        self.encoder.close()
        self.store.close()
