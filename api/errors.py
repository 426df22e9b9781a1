"""Errors: every one a client can meet is JSON ``{"error": code, "detail": message}``, never a traceback.

4xx for what the client sent; 503 with ``Retry-After`` while the store, the encoder or the image
storage cannot answer.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagesearch.blobs import BlobStorageError
from imagesearch.encoders import EncoderUnavailable
from imagesearch.fetch import FetchError
from imagesearch.preprocess import ImageDecodeError
from imagesearch.search import QueryError
from imagesearch.stores import StoreUnavailable

log = logging.getLogger("imagesearch.api")

QUERY_ERROR_STATUS = {"invalid_query": 400, "not_found": 404, "pending": 409}
FETCH_ERROR_STATUS = {"too_large": 413}  # every other reason the URL gave no image: 400
RETRY_AFTER_S = "5"


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class ErrorBody(BaseModel):
    error: str
    detail: str


# The error answers each route documents in the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 422, 503)}


def error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Turn every exception a request can raise into its JSON answer."""

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
        return error(503, code, str(exc), {"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(BlobStorageError)
    async def _blobs_unavailable(request: Request, exc: BlobStorageError):
        return error(503, "blobs_unavailable", f"the image storage cannot answer: {exc.strerror or exc}",
                     {"Retry-After": RETRY_AFTER_S})

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
