"""``/healthz``, ``/status`` and ``/metrics``: what operators and probes read."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from imagesearch.api.auth import require_read
from imagesearch.api.context import Context
from imagesearch.api.errors import ErrorBody
from imagesearch.model_card import ModelCard

router = APIRouter(tags=["operations"])
VERSIONED = ("imagesearch", "fastapi", "onnxruntime", "numpy", "pillow", "elasticsearch", "tritonclient")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


@router.get("/healthz", responses={503: {"description": "a dependency cannot answer"}})
def healthz(context: Context) -> JSONResponse:
    """Each dependency's state; 503 when the store or the encoder cannot answer."""
    health = context.backends.health()
    return JSONResponse(health, status_code=200 if health["ok"] else 503)


@router.get("/status", responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}},
            dependencies=[Depends(require_read)])
def status(context: Context) -> dict:
    """Counts, the models, the backends, limits and versions."""
    settings = context.settings
    service = context.backends.service()  # the default model: 503 when it cannot answer
    models = [{**describe(s.card, settings.model_variant), "counts": s.store.counts(s.model).model_dump()}
              for s in context.backends.services()]
    default = next((m for m in models if m["slug"] == service.model), None)
    return {
        "model": describe(service.card, settings.model_variant),
        "counts": default["counts"] if default else service.store.counts(service.model).model_dump(),
        "models": models,  # every served model that can answer now, the default first
        "backends": {"encoder": settings.encoder, "store": settings.store},
        "limits": {"max_k": settings.max_k, "max_query_chars": settings.max_query_chars,
                   "max_upload_bytes": settings.max_upload_bytes},
        "text_queries": service.stats(),
        "versions": versions(),
    }


def describe(card: ModelCard, variant: str) -> dict:
    return {"slug": card.slug, "family": card.family, "architecture": card.architecture, "pretrained": card.pretrained,
            "dim": card.dim, "vectors_per_image": card.vectors_per_image, "image_size": card.image_size,
            "context_length": card.context_length, "variant": variant}


@router.get("/metrics", response_class=Response)
def prometheus(context: Context) -> Response:
    """Prometheus metrics: request latency per route, encoder and store latency, text batch sizes."""
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
