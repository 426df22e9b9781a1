"""``/duplicates``: the groups of near-duplicate images of a model (imagesearch/search/duplicates.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from imagesearch.api.context import Context
from imagesearch.api.rate_limit import Limits
from imagesearch.api.routes.search import LIMITED
from imagesearch.api.schemas import MODEL_HELP
from imagesearch.search.duplicates import DuplicatesResponse

router = APIRouter(tags=["duplicates"])


@router.get("/duplicates", response_model=DuplicatesResponse, responses=LIMITED)
async def duplicates(
    context: Context,
    limits: Limits,
    threshold: Annotated[float | None, Query(ge=0.5, le=1.0, description=(
        "the cosine at or above which two images are near-duplicates; default IMAGESEARCH_DUPLICATE_THRESHOLD"))] = None,
    model: Annotated[str | None, Query(max_length=200, description=MODEL_HELP)] = None,
) -> DuplicatesResponse:
    """Groups of near-duplicate images (re-encoded, resized or slightly cropped copies; exact copies are
    one image already), largest first. It compares every image with its nearest neighbours: it takes
    long on a large collection, and counts as an image search (the dearer kind) for the rate limit."""
    limits.take("uploads")
    return await run_in_threadpool(lambda: context.backends.service(model).duplicates(threshold))
