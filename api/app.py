"""The search API: ``create_app(settings)`` builds the FastAPI application from its parts.

- ``routes/``: ``search`` (/search, /search/image), ``duplicates`` (/duplicates), ``images``
  (/images/{id}), ``tags`` (/tags), ``operations`` (/healthz, /status, /metrics);
- ``errors``: every error as JSON ``{"error": code, "detail": message}`` (4xx, or 503 with
  Retry-After while a dependency cannot answer), never a traceback;
- ``auth``: optional API keys (read and admin), checked in front of every route but the probes;
- ``body_limit``: the cap on a request's body, counted as it arrives;
- ``rate_limit``: token buckets per client for searches and image searches (429 with Retry-After);
- ``metrics``: Prometheus histograms and counters; ``backends``: the encoder and store, built on first use;
- ``schemas``: the request bodies; ``context``: what the handlers share.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from imagesearch.api import errors
from imagesearch.api.auth import OPEN_PATHS, KeyGuard, KeyRing, require_read
from imagesearch.api.backends import Backends
from imagesearch.api.body_limit import BodyLimit
from imagesearch.api.context import ApiContext
from imagesearch.api.metrics import Metrics
from imagesearch.api.rate_limit import RateLimits
from imagesearch.api.routes import duplicates, images, operations, search
from imagesearch.api.routes import tags as tag_routes
from imagesearch.blobs import make_blob_store
from imagesearch.config import Settings, get_settings
from imagesearch.fetch import FetchOptions, make_client
from imagesearch.search import SearchService

log = logging.getLogger("imagesearch.api")


def create_app(settings: Settings | None = None, service: SearchService | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    fetch_options = dataclasses.replace(
        FetchOptions.from_settings(settings), retries=0, max_bytes=settings.max_upload_bytes,
        total_timeout_s=settings.url_fetch_timeout_s)
    context = ApiContext(settings, Backends(settings, metrics, service), metrics, make_blob_store(settings, wait_s=0),
                         fetch_options, RateLimits(settings, metrics.rate_limited))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        context.http = make_client(fetch_options, max_connections=16)
        await run_in_threadpool(context.backends.services)  # load every model now, not on the first query
        for problem in context.backends.errors.values():
            log.warning("starting without a working backend (see /healthz): %s", problem)
        yield
        await context.http.close()
        context.backends.close()

    app = FastAPI(
        title="imagesearch", version=operations.versions().get("imagesearch", "0"), lifespan=lifespan,
        description="Semantic image search with CLIP: search indexed images by text, by an uploaded image, "
                    "by an image URL, or by indexed images (more like these, unlike those); find near-duplicates.",
    )
    app.state.context = context
    errors.install(app)

    # Middleware, innermost first (each added one wraps the ones before): the key check before the
    # router, and so before any body is read; the body cap around it; the timer outermost, so that
    # refused requests are measured too.
    docs = {path for path in (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url) if path}
    app.add_middleware(KeyGuard, keys=KeyRing(settings), open_paths=(OPEN_PATHS | docs) if settings.api_docs_open else OPEN_PATHS)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    metrics.install(app)
    # require_read on the routes gives them the caller's role and declares the keys in the OpenAPI
    # schema; KeyGuard enforces the key on every path but the open ones, these routes or any other.
    for routes in (search, duplicates, images, tag_routes):
        app.include_router(routes.router, dependencies=[Depends(require_read)])
    app.include_router(operations.router)  # /status declares its key itself; /healthz and /metrics are open
    return app
