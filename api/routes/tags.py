"""``/tags``: the tags of the indexed images (imagesearch/tags), with how many images hold each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from imagesearch.api.context import Context
from imagesearch.api.errors import ERRORS
from imagesearch.records import MAX_K
from imagesearch.tags.counts import TagCounts, tag_counts

router = APIRouter(tags=["tags"])


@router.get("/tags", response_model=TagCounts, responses=ERRORS)
def list_tags(context: Context,
              limit: Annotated[int, Query(ge=1, le=MAX_K, description="how many tags, the most held first")] = 100) -> TagCounts:
    """The tags the indexed images hold, each with how many hold it, the most held first: each is a
    value of the ``tags`` filter of ``/search``."""
    return tag_counts(context.backends.service().store, limit)
