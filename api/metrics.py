"""Prometheus metrics: request latency per route, encoder and store call latency, text batch sizes, and the
requests the rate limits refused."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What is timed: the encoder's and the store's query-path methods. Named from the interfaces, and
# checked against each wrapped object, so a renamed method fails at start-up instead of going unseen.
ENCODER_CALLS = ("encode_texts", "encode_images")
STORE_CALLS = ("search", "get", "get_vector", "counts")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Histogram("imagesearch_http_request_duration_seconds", "HTTP request latency",
                                  ["route", "method", "status"], registry=self.registry)
        self.encoder = Histogram("imagesearch_encoder_duration_seconds", "encoder call latency",
                                 ["op"], registry=self.registry)
        self.store = Histogram("imagesearch_store_duration_seconds", "vector store call latency",
                               ["op"], registry=self.registry)
        self.text_batch = Histogram("imagesearch_text_batch_size", "texts per text-encoder call (micro-batching)",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.rate_limited = Counter("imagesearch_rate_limited", "requests refused by a rate limit (429), by kind",
                                    ["kind"], registry=self.registry)
        for kind in ("searches", "uploads"):  # at 0 from the start, so that a rate can be taken of them
            self.rate_limited.labels(kind)

    def timed_encoder(self, encoder: Any) -> Timed:
        def count_batch(method: str, args: tuple) -> None:
            if method == "encode_texts":
                self.text_batch.observe(len(args[0]))

        return Timed(encoder, self.encoder, ENCODER_CALLS, count_batch)

    def timed_store(self, store: Any) -> Timed:
        return Timed(store, self.store, STORE_CALLS)

    def install(self, app: FastAPI) -> None:
        """Time every request by its route template (not its path: ids would explode the labels)."""
        app.add_middleware(RequestTimer, histogram=self.requests)


class RequestTimer:
    """Plain ASGI middleware rather than ``@app.middleware("http")``: that one runs each request in a
    task of its own with streams between the two, a noticeable share of a cached query's cost."""

    def __init__(self, app: ASGIApp, histogram: Histogram):
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # 500: an exception that escapes is answered as one

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")  # set by the router once it matched
            self.histogram.labels(getattr(route, "path", "unmatched"), scope["method"],
                                  str(status)).observe(time.perf_counter() - started)


class Timed:
    """Wraps an encoder or store: the named methods are timed into ``histogram``; the rest pass through."""

    def __init__(self, target: Any, histogram: Histogram, methods: tuple[str, ...],
                 on_call: Callable[[str, tuple], None] | None = None):
        missing = [m for m in methods if not callable(getattr(target, m, None))]
        if missing:
            raise TypeError(f"{type(target).__name__} has no method {', '.join(missing)} to time (renamed?)")
        self._target, self._histogram, self._methods, self._on_call = target, histogram, methods, on_call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._methods:
            return attr

        def timed(*args, **kwargs):
            if self._on_call:
                self._on_call(name, args)
            with self._histogram.labels(name).time():
                return attr(*args, **kwargs)

        return timed
