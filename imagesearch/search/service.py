"""``SearchService``: a query (text, image bytes, a stored image id, or stored images as examples) ->
encoder -> vector store -> results; and the groups of near-duplicate images."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

import numpy as np

from imagesearch.config import Settings
from imagesearch.encoders import Encoder, make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import Hit, SearchFilters, is_image_id
from imagesearch.search import order
from imagesearch.search.batcher import TextBatcher
from imagesearch.search.blend import blend
from imagesearch.search.cache import VectorCache
from imagesearch.search.duplicates import DuplicatesResponse, collapsed, group_pairs
from imagesearch.search.fusion import fuse
from imagesearch.search.query import Examples, Mode, QueryError, Sort, check_page, check_steered_mode, check_threshold
from imagesearch.search.results import SearchResponse, SearchResult, to_result
from imagesearch.stores import MAX_K, VectorStore, make_store, query_vector

Found = TypeVar("Found", Hit, SearchResult)  # what a ranking holds: the store's hits, or fused results


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

    def steer(self, vector: np.ndarray | None, query: dict, examples: Examples | None) -> tuple[np.ndarray, dict]:
        """The query vector with its examples blended in (imagesearch/search/blend.py), and the query
        echoed with them; ``vector`` None: a query of positive_ids alone."""
        if not examples:
            assert vector is not None  # a query without examples has its own vector
            return vector, query
        positives = ([] if vector is None else [vector]) + [self.id_vector(i) for i in examples.positive_ids]
        negatives = [self.text_vector(t) for t in examples.negative] + [self.id_vector(i) for i in examples.negative_ids]
        parts = {"negative": list(examples.negative), "positive_ids": list(examples.positive_ids),
                 "negative_ids": list(examples.negative_ids)}
        weight = {"negative_weight": self.settings.negative_weight} if negatives else {}
        return blend(positives, negatives, self.settings.negative_weight), {
            **query, **{name: given for name, given in parts.items() if given}, **weight}

    # --- searches ----------------------------------------------------------------------------------

    def search_vector(
        self, vector: np.ndarray, query: dict, k: int = 10, filters: SearchFilters | None = None,
        min_score: float | None = None, started: float | None = None, *, sort: Sort = "relevance", offset: int = 0,
        collapse: bool = False,
    ) -> SearchResponse:
        """The page of ``k`` results from ``offset`` in ``sort`` order (imagesearch/search/order.py);
        ``collapse``: near-duplicates of a better result left out (imagesearch/search/duplicates.py)."""
        started = started or time.perf_counter()
        self.check_k(k, offset)
        hits = self._gather(lambda depth: self.store.search(self.model, vector, depth, filters, min_score),
                            self._depth(sort, offset, k), collapse)
        return self._respond(query, hits, sort, offset, k, started, collapse=collapse)

    def search_text(self, text: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                    mode: Mode = "vector", *, sort: Sort = "relevance", offset: int = 0, examples: Examples | None = None,
                    collapse: bool = False) -> SearchResponse:
        """``vector``: by meaning (CLIP); ``text``: by the words of captions, tags and file names (BM25);
        ``hybrid``: both, fused by reciprocal rank (``min_score`` then applies to the vector part).
        ``examples`` (vector only) steer the query: ``steer``."""
        started = time.perf_counter()
        self.check_k(k, offset)
        if mode == "vector":
            vector, query = self.steer(self.text_vector(text), {"text": text}, examples)
            return self.search_vector(vector, query, k, filters, min_score, started, sort=sort, offset=offset,
                                      collapse=collapse)
        check_steered_mode(examples, mode)
        text = self.check_text(text)
        query = {"text": text, "mode": mode}
        depth = self._depth(sort, offset, k)
        if mode == "text":
            found = self._gather(lambda d: self.store.keyword_search(text, d, filters), depth, collapse)
            return self._respond(query, found, sort, offset, k, started, ["text"], collapse=collapse)
        ranked = offset + k if sort == "relevance" else depth  # the fused ranking that decides the page

        def fused(asked: int) -> list[SearchResult]:  # asked: depth, or deeper to fill a collapsed page
            # deep enough that a match of either part gets both chances
            candidates = min(max(4 * (ranked + asked - depth), 50), MAX_K)
            vector_hits = self.store.search(self.model, self.text_vector(text), candidates, filters, min_score)
            return fuse(vector_hits, self.store.keyword_search(text, candidates, filters), asked)

        return self._respond(query, self._gather(fused, depth, collapse), sort, offset, k, started, collapse=collapse)

    def search_image(self, data: bytes, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                     query: dict | None = None, *, sort: Sort = "relevance", offset: int = 0,
                     examples: Examples | None = None, collapse: bool = False) -> SearchResponse:
        started = time.perf_counter()
        self.check_k(k, offset)
        vector, query = self.steer(self.image_vector(data), query or {"image": f"{len(data)} bytes"}, examples)
        return self.search_vector(vector, query, k, filters, min_score, started, sort=sort, offset=offset, collapse=collapse)

    def search_id(self, image_id: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                  *, sort: Sort = "relevance", offset: int = 0, examples: Examples | None = None,
                  collapse: bool = False) -> SearchResponse:
        started = time.perf_counter()
        self.check_k(k, offset)
        vector, query = self.steer(self.id_vector(image_id), {"image_id": image_id}, examples)
        return self.search_vector(vector, query, k, filters, min_score, started, sort=sort, offset=offset, collapse=collapse)

    def search_examples(self, examples: Examples, k: int = 10, filters: SearchFilters | None = None,
                        min_score: float | None = None, *, sort: Sort = "relevance", offset: int = 0,
                        collapse: bool = False) -> SearchResponse:
        """"More like these": a query made of ``examples.positive_ids`` (and its negatives) alone."""
        started = time.perf_counter()
        self.check_k(k, offset)
        if not examples.positive_ids:
            raise QueryError("a query without text or image needs positive_ids")
        vector, query = self.steer(None, {}, examples)
        return self.search_vector(vector, query, k, filters, min_score, started, sort=sort, offset=offset, collapse=collapse)

    def duplicates(self, threshold: float | None = None) -> DuplicatesResponse:
        """Every group of near-duplicates among the model's images (imagesearch/search/duplicates.py)."""
        started = time.perf_counter()
        threshold = check_threshold(self.settings.duplicate_threshold if threshold is None else threshold)
        pairs = self.store.near_pairs(self.model, threshold, self.settings.duplicate_neighbours)
        return DuplicatesResponse(model=self.model, threshold=threshold, groups=group_pairs(pairs),
                                  took_ms=round((time.perf_counter() - started) * 1000, 2))

    def _depth(self, sort: Sort, offset: int, k: int) -> int:
        return order.depth(sort, offset, k, self.settings.sort_window)

    def _gather(self, fetch: Callable[[int], Sequence[Found]], depth: int, collapse: bool) -> list[Found]:
        """The best ``depth`` of ``fetch``'s ranking; with ``collapse``, near-duplicates of better ones left out."""
        if not collapse:
            return list(fetch(depth))
        return collapsed(fetch, depth, lambda ids: self.store.get_vectors(self.model, ids), self.settings.duplicate_threshold)

    def _respond(self, query: dict, found: Sequence[Hit] | Sequence[SearchResult], sort: Sort, offset: int, k: int,
                 started: float, matched: list[str] | None = None, *, collapse: bool = False) -> SearchResponse:
        """The page of ``found`` (hits, or fused results) as the response, the query with its page and order."""
        chosen, next_offset = order.page(list[Hit | SearchResult](found), sort, offset, k, _taken_at)
        results = [item if isinstance(item, SearchResult) else to_result(item, matched or ["vector"]) for item in chosen]
        page = {**({"sort": sort} if sort != "relevance" else {}), **({"offset": offset} if offset else {}),
                **({"collapse": True} if collapse else {})}
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
