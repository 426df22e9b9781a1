"""Search: query (text, image bytes, or a stored image id) -> encoder -> vector store -> results.

The API, the CLI and the UI (through the API) all search through ``SearchService``. Text queries
go through an LRU cache (repeated queries skip the encoder) and a micro-batcher (concurrent queries
share one encoder call instead of queuing one by one).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

from imagesearch.config import Settings
from imagesearch.encoders import Encoder, make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import Hit, SearchFilters, is_image_id
from imagesearch.stores import MAX_K, VectorStore, make_store, query_vector


class QueryError(ValueError):
    """The query itself is unusable (bad k, empty text, unknown image id...): a 4xx.

    ``reason`` is a short code: ``invalid_query`` (400), ``not_found`` (404), ``pending`` (409).
    """

    def __init__(self, message: str, reason: str = "invalid_query"):
        super().__init__(message)
        self.reason = reason


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


Mode = Literal["vector", "text", "hybrid"]
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


class VectorCache:
    """A thread-safe LRU map text -> embedding (vectors are stored read-only, so sharing is safe)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        if self.size <= 0:
            return
        vector = np.array(vector, np.float32)
        vector.flags.writeable = False
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class TextBatcher:
    """Collects texts submitted from many threads and encodes them together.

    One worker thread takes the first waiting text, then whatever else arrives within ``max_wait_s``
    (up to ``max_batch``), and makes one ``encode`` call for all of them. Under load the batch fills
    while the previous one is being encoded, so throughput approaches the encoder's batch throughput.
    The wait is only spent while texts come together (the last call had more than one): a lone
    query, the last one having been alone too, goes to the encoder at once.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], max_batch: int = 32, max_wait_s: float = 0.002):
        self._encode = encode
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self._queue: queue.SimpleQueue[tuple[str, Future] | None] = queue.SimpleQueue()
        self._stopped = False
        self.batches = self.texts = 0  # counters for /status and the benchmark
        self._last_batch = 0
        self._thread = threading.Thread(target=self._loop, name="text-batcher", daemon=True)
        self._thread.start()

    def encode(self, text: str) -> np.ndarray:
        if self._stopped:
            raise RuntimeError("the text batcher is closed")
        future: Future = Future()
        self._queue.put((text, future))
        return future.result()

    def close(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: tuple[str, Future]) -> tuple[list[tuple[str, Future]], bool]:
        batch, deadline = [first], time.monotonic() + (self.max_wait_s if self._last_batch > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            self._last_batch = len(batch)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[str, Future]]) -> None:
        texts = list(dict.fromkeys(text for text, _ in batch))  # identical concurrent queries: encode once
        try:
            vectors = dict(zip(texts, self._encode(texts), strict=True))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) > 1:  # one bad text must not fail the others: retry each on its own
                for item in batch:
                    self._run([item])
                return
            batch[0][1].set_exception(exc)
            return
        self.batches += 1
        self.texts += len(texts)
        for text, future in batch:
            future.set_result(vectors[text])


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

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise QueryError(f"k must be between 1 and {self.settings.max_k}, got {k}")

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
        self, vector: np.ndarray, query: dict, k: int = 10,
        filters: SearchFilters | None = None, min_score: float | None = None, started: float | None = None,
    ) -> SearchResponse:
        started = started or time.perf_counter()
        self.check_k(k)
        hits = self.store.search(self.model, vector, k, filters, min_score)
        return SearchResponse(
            query=query, model=self.model, took_ms=round((time.perf_counter() - started) * 1000, 2),
            results=[to_result(h) for h in hits],
        )

    def search_text(self, text: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None,
                    mode: Mode = "vector") -> SearchResponse:
        """``vector``: by meaning (CLIP); ``text``: by the words of captions and file names (BM25);
        ``hybrid``: both, fused by reciprocal rank (``min_score`` then applies to the vector part)."""
        started = time.perf_counter()
        self.check_k(k)
        if mode == "vector":
            return self.search_vector(self.text_vector(text), {"text": text}, k, filters, min_score, started)
        text = self.check_text(text)
        query = {"text": text, "mode": mode}
        if mode == "text":
            results = [to_result(h, ["text"]) for h in self.store.keyword_search(text, k, filters)]
        else:
            candidates = min(max(4 * k, 50), MAX_K)  # deep enough that a match of either part gets both chances
            vector_hits = self.store.search(self.model, self.text_vector(text), candidates, filters, min_score)
            results = fuse(vector_hits, self.store.keyword_search(text, candidates, filters), k)
        return SearchResponse(query=query, model=self.model, took_ms=round((time.perf_counter() - started) * 1000, 2),
                              results=results)

    def search_image(self, data: bytes, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None, query: dict | None = None) -> SearchResponse:
        started = time.perf_counter()
        self.check_k(k)
        return self.search_vector(self.image_vector(data), query or {"image": f"{len(data)} bytes"}, k, filters, min_score, started)

    def search_id(self, image_id: str, k: int = 10, filters: SearchFilters | None = None, min_score: float | None = None) -> SearchResponse:
        started = time.perf_counter()
        self.check_k(k)
        return self.search_vector(self.id_vector(image_id), {"image_id": image_id}, k, filters, min_score, started)

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
