"""The search API: ``create_app(settings)`` builds the FastAPI application.

Every error a client can cause is answered as JSON ``{"error": code, "detail": message}`` with a
4xx status; a dependency that cannot answer (store, encoder) gives a 503 with the same shape.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import threading
import time
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagesearch.blobs import CONTENT_TYPES, EXTENSIONS, BlobStore
from imagesearch.config import Settings, get_settings
from imagesearch.encoders import EncoderUnavailable, make_encoder
from imagesearch.fetch import FetchError, FetchOptions, fetch_image, make_client
from imagesearch.preprocess import ImageDecodeError
from imagesearch.records import SearchFilters, is_image_id
from imagesearch.search import QueryError, SearchResponse, SearchService
from imagesearch.stores import StoreUnavailable, make_store

log = logging.getLogger("imagesearch.api")

QUERY_ERROR_STATUS = {"invalid_query": 400, "not_found": 404, "pending": 409}
FETCH_ERROR_STATUS = {"too_large": 413}  # every other reason the URL gave no image: 400
IMMUTABLE = "public, max-age=31536000, immutable"  # content-addressed: the bytes behind an id never change
MAX_DIMENSION = 1_000_000  # pixel-size filters beyond this can match nothing anyway


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (lone surrogate)") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]


class Filters(SearchFilters):
    """The store's filters with bounds a client cannot overflow (JSON integers are unbounded)."""

    format: list[Literal[tuple(EXTENSIONS)]] | None = Field(None, description="keep only these formats")  # type: ignore[valid-type]
    min_width: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    min_height: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    max_width: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    max_height: int | None = Field(None, ge=0, le=MAX_DIMENSION)


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``image_id`` (an indexed image: "more like this") or ``image_url``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "a red circle", "k": 10}]})
    text: Text | None = Field(None, description="what to look for, in words")
    image_id: Text | None = Field(None, description="id (sha256) of an indexed image: find similar ones")
    image_url: Text | None = Field(None, max_length=4096, description="an image on the web: find similar ones")
    k: int = Field(10, description="how many results (1..max_k, default max 100)")
    filters: Filters | None = None
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop results below this cosine")

    @model_validator(mode="after")
    def _one_query(self) -> "SearchRequest":
        given = [name for name in ("text", "image_id", "image_url") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, image_id, image_url (got {', '.join(given) or 'none'})")
        return self


class ErrorBody(BaseModel):
    error: str
    detail: str


ERRORS = {status: {"model": ErrorBody} for status in (400, 404, 409, 413, 422, 503)}


# --- metrics -----------------------------------------------------------------------------------


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


class _Timed:
    """Wraps an encoder or store: the named methods are timed into ``histogram``; the rest pass through."""

    def __init__(self, target: Any, histogram: Histogram, methods: tuple[str, ...], on_call=None):
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


# --- dependencies ------------------------------------------------------------------------------


class Backends:
    """The encoder and the store, built on first use and again after a failure (a store that is not
    up yet when the API starts, a model exported later), so the API itself always starts."""

    def __init__(self, settings: Settings, metrics: Metrics, service: SearchService | None = None):
        self.settings, self.metrics = settings, metrics
        self._service = service
        self._encoder = service.encoder if service else None
        self._store = service.store if service else None
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def _count_batch(self, method: str, args: tuple) -> None:
        if method == "encode_texts":
            self.metrics.text_batch.observe(len(args[0]))

    def _build(self) -> None:
        self._errors = {}
        if self._encoder is None:
            try:
                self._encoder = _Timed(make_encoder(self.settings), self.metrics.encoder,
                                       ("encode_texts", "encode_images"), self._count_batch)
            except Exception as exc:  # a missing model, files that do not load: not a client error
                self._errors["encoder"] = f"the encoder cannot start: {exc}"
        if self._store is None:
            try:
                self._store = _Timed(make_store(self.settings), self.metrics.store,
                                     ("search", "get", "get_vector", "counts"))
            except Exception as exc:
                self._errors["store"] = f"the store cannot open: {exc}"
        if self._encoder is not None and self._store is not None:
            self._service = SearchService(self.settings, self._encoder, self._store)

    def service(self) -> SearchService:
        with self._lock:
            if self._service is None:
                self._build()
            if "encoder" in self._errors:
                raise EncoderUnavailable(self._errors["encoder"])
            if "store" in self._errors:
                raise StoreUnavailable(self._errors["store"])
            return self._service

    def health(self) -> dict:
        try:
            self.service()
        except (EncoderUnavailable, StoreUnavailable):
            pass
        parts = {}
        for name, part in (("encoder", self._encoder), ("store", self._store)):
            parts[name] = part.health() if part is not None else {"ok": False, "error": self._errors.get(name, "")}
        ok = all(p.get("ok") for p in parts.values())
        model = self._service.model if self._service else (self.settings.model or None)
        return {"ok": ok, "model": model, **parts}

    def close(self) -> None:
        if self._service is not None:
            self._service.close()


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("imagesearch", "fastapi", "onnxruntime", "numpy", "pillow", "elasticsearch", "tritonclient"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


# --- the application ---------------------------------------------------------------------------


def create_app(settings: Settings | None = None, service: SearchService | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    backends = Backends(settings, metrics, service)
    blobs = BlobStore(settings.images_dir)
    fetch_options = dataclasses.replace(
        FetchOptions.from_settings(settings), retries=0, max_bytes=settings.max_upload_bytes,
        total_timeout_s=settings.url_fetch_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.http = make_client(fetch_options, max_connections=16)
        try:
            await run_in_threadpool(backends.service)  # load the model now, not on the first query
        except (EncoderUnavailable, StoreUnavailable) as exc:
            log.warning("starting without a working backend (see /healthz): %s", exc)
        yield
        await app.state.http.aclose()
        backends.close()

    app = FastAPI(
        title="imagesearch", version=_versions().get("imagesearch", "0"), lifespan=lifespan,
        description="Semantic image search with CLIP: search indexed images by text, by an uploaded image, "
                    "by an image URL, or by an indexed image (more like this).",
    )
    app.state.backends = backends
    app.state.metrics = metrics

    # --- errors: JSON, a clear message, never a traceback ----------------------------------------

    def error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError):
        return error(QUERY_ERROR_STATUS.get(exc.reason, 400), exc.reason, str(exc))

    @app.exception_handler(ImageDecodeError)
    async def _decode_error(request: Request, exc: ImageDecodeError):
        status = 413 if exc.reason == "too_many_pixels" else 400
        return error(status, exc.reason, f"the image cannot be used: {exc}")

    @app.exception_handler(FetchError)
    async def _fetch_error(request: Request, exc: FetchError):
        return error(FETCH_ERROR_STATUS.get(exc.reason, 400), exc.reason, f"the image_url gave no image: {exc}")

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(EncoderUnavailable)
    async def _unavailable(request: Request, exc: Exception):
        code = "store_unavailable" if isinstance(exc, StoreUnavailable) else "encoder_unavailable"
        return error(503, code, str(exc), {"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, f"http_{exc.status_code}", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal_error", "the server failed to answer; the error is in its log")

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload_bytes + 65536:  # refuse before reading it
            response = error(413, "too_large", f"the request body is over {settings.max_upload_bytes} bytes")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "unmatched"), request.method, str(response.status_code)).observe(
            time.perf_counter() - started)
        return response

    # --- search ------------------------------------------------------------------------------------

    @app.get("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    def search_get(
        q: Annotated[str, Query(description="what to look for, in words")],
        k: Annotated[int, Query(description="how many results (1..max_k)")] = 10,
        min_score: Annotated[float | None, Query(ge=-1.0, le=1.0, description="drop results below this cosine")] = None,
    ) -> SearchResponse:
        """Search by text."""
        return backends.service().search_text(q, k, min_score=min_score)

    @app.post("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    async def search_post(body: SearchRequest, request: Request) -> SearchResponse:
        """Search by text, by an indexed image (``image_id``) or by an image on the web (``image_url``)."""
        service = await run_in_threadpool(backends.service)
        service.check_k(body.k)  # before any fetch
        if body.text is not None:
            return await run_in_threadpool(service.search_text, body.text, body.k, body.filters, body.min_score)
        if body.image_id is not None:
            return await run_in_threadpool(service.search_id, body.image_id, body.k, body.filters, body.min_score)
        fetched = await fetch_image(request.app.state.http, body.image_url, fetch_options)
        return await run_in_threadpool(service.search_image, fetched.data, body.k, body.filters, body.min_score,
                                       {"image_url": body.image_url})

    @app.post("/search/image", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    async def search_image(
        file: Annotated[UploadFile, File(description="the example image (JPEG, PNG, WebP, GIF, BMP, TIFF)")],
        k: Annotated[int, Form(description="how many results (1..max_k)")] = 10,
        min_score: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    ) -> SearchResponse:
        """Search by an uploaded image (multipart form field ``file``)."""
        service = await run_in_threadpool(backends.service)
        service.check_k(k)
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"the upload is over the cap of {settings.max_upload_bytes} bytes")
        query = {"image": file.filename or "upload", "bytes": len(data)}
        return await run_in_threadpool(service.search_image, data, k, None, min_score, query)

    # --- images --------------------------------------------------------------------------------------

    @app.get("/images/{image_id}", responses={**ERRORS, 200: {"content": {t: {} for t in CONTENT_TYPES.values()}}},
             response_class=Response, tags=["images"])
    def image(image_id: str, request: Request) -> Response:
        """The stored bytes of an indexed image."""
        if not is_image_id(image_id):  # checked before any path is built from it
            raise ApiError(400, "invalid_id", "an image id is 64 lower-case hex characters (the sha256 of the bytes)")
        record = backends.service().store.get(image_id)
        path = blobs.path(image_id, record.format) if record else None
        if path is None or not path.is_file():
            raise ApiError(404, "not_found", f"no image with id {image_id}")
        etag = f'"{image_id}"'
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=CONTENT_TYPES.get(record.format, "application/octet-stream"), headers=headers)

    # --- operations ------------------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"], responses={503: {"description": "a dependency cannot answer"}})
    def healthz() -> JSONResponse:
        """Each dependency's state; 503 when the store or the encoder cannot answer."""
        health = backends.health()
        return JSONResponse(health, status_code=200 if health["ok"] else 503)

    @app.get("/status", tags=["operations"], responses={503: {"model": ErrorBody}})
    def status() -> dict:
        """Counts, the model, the backends, limits and versions."""
        service = backends.service()
        card = service.card
        return {
            "model": {"slug": card.slug, "architecture": card.architecture, "pretrained": card.pretrained,
                      "dim": card.dim, "image_size": card.image_size, "context_length": card.context_length,
                      "variant": settings.model_variant},
            "counts": service.store.counts(service.model).model_dump(),
            "backends": {"encoder": settings.encoder, "store": settings.store},
            "limits": {"max_k": settings.max_k, "max_query_chars": settings.max_query_chars,
                       "max_upload_bytes": settings.max_upload_bytes},
            "text_queries": service.stats(),
            "versions": _versions(),
        }

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics: request latency per route, encoder and store latency, text batch sizes."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
