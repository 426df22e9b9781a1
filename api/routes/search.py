"""``/search`` (GET by text, POST by text, indexed image, image URL or indexed images as examples) and
``/search/image`` (upload), each within the client's rate limit (``rate_limit``). GET and the upload
form take the photo filters as plain values (a position as "LAT,LON"); POST takes them in ``filters``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool

from imagesearch.api.context import Context
from imagesearch.api.errors import ERRORS, ApiError, ErrorBody
from imagesearch.api.rate_limit import Limits
from imagesearch.api.schemas import COLLAPSE_HELP, MODEL_HELP, OFFSET_HELP, SORT_HELP, Filters, SearchRequest, filter_help
from imagesearch.fetch import fetch_image
from imagesearch.records import MAX_FILTER_TAGS, MAX_K
from imagesearch.search import Mode, SearchResponse, Sort, filters_from
from imagesearch.search.query import examples_from, split_negatives

router = APIRouter(tags=["search"])
LIMITED = {
    **ERRORS,
    429: {"model": ErrorBody, "description": "over the client's rate limit: try again after Retry-After seconds"},
}
Q_HELP = ('what to look for, in words; a word or "quoted phrase" after a minus is a negative, steered away from '
          '(vector mode): beach -people -"parked cars"')
NEAR_HELP = "taken within within_km of this position: LAT,LON in decimal degrees, e.g. 48.8584,2.2945 (with within_km)"
TAGS_HELP = "tagged with every one of these: repeat the parameter, or separate them by commas (GET /tags lists the tags)"


@router.get("/search", response_model=SearchResponse, responses=LIMITED)
async def search_get(
    context: Context,
    limits: Limits,
    q: Annotated[str, Query(description=Q_HELP)],
    k: Annotated[int, Query(description="how many results (1..max_k)")] = 10,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0, description="drop results below this cosine")] = None,
    mode: Annotated[Mode, Query(description="vector: by meaning; text: by the words of captions, tags and file names; "
                                            "hybrid: both, fused by reciprocal rank")] = "vector",
    model: Annotated[str | None, Query(max_length=200, description=MODEL_HELP)] = None,
    taken_after: Annotated[str | None, Query(max_length=64, description=filter_help("taken_after"))] = None,
    taken_before: Annotated[str | None, Query(max_length=64, description=filter_help("taken_before"))] = None,
    camera: Annotated[str | None, Query(max_length=200, description=filter_help("camera"))] = None,
    near: Annotated[str | None, Query(max_length=64, description=NEAR_HELP)] = None,
    within_km: Annotated[float | None, Query(description=filter_help("within_km"))] = None,
    sort: Annotated[Sort, Query(description=SORT_HELP)] = "relevance",
    offset: Annotated[int, Query(ge=0, le=MAX_K, description=OFFSET_HELP)] = 0,
    tags: Annotated[list[str] | None, Query(max_length=MAX_FILTER_TAGS, description=TAGS_HELP)] = None,
    collapse: Annotated[bool, Query(description=COLLAPSE_HELP)] = False,
) -> SearchResponse:
    """Search by text; a word or "quoted phrase" after a minus steers away from it (``beach -people``)."""
    limits.take("searches")
    filters = filters_from(Filters, taken_after=taken_after, taken_before=taken_before, camera=camera, near=near,
                           within_km=within_km, tags=tags)
    text, negative = split_negatives(q)
    examples = examples_from(negative, max_each=context.settings.max_query_examples, mode=mode)
    # async with one hop to a worker thread: as a plain def, FastAPI would make a second one to
    # check the response (a cached query's whole cost is a few ms, and each hop is a fraction of one)
    return await run_in_threadpool(lambda: context.backends.service(model).search_text(
        text, k, filters, min_score=min_score, mode=mode, sort=sort, offset=offset, examples=examples, collapse=collapse))


@router.post("/search", response_model=SearchResponse, responses=LIMITED)
async def search_post(body: SearchRequest, context: Context, limits: Limits) -> SearchResponse:
    """Search by text, by an indexed image (``image_id``), by an image on the web (``image_url``) or by
    indexed images alone (``positive_ids``), steered away from ``negative`` texts and ``negative_ids``."""
    limits.take("searches" if body.image_url is None else "uploads")  # an image_url is fetched and encoded like an upload
    examples = body.examples(context.settings.max_query_examples)
    sort, offset, collapse = body.sort, body.offset, body.collapse

    def search_stored() -> SearchResponse:  # by text or by indexed images: one hop to a worker thread
        service = context.backends.service(body.model)
        if body.text is not None:
            return service.search_text(body.text, body.k, body.filters, body.min_score, body.mode, sort=sort, offset=offset,
                                       examples=examples, collapse=collapse)
        if body.image_id is not None:
            return service.search_id(body.image_id, body.k, body.filters, body.min_score, sort=sort, offset=offset,
                                     examples=examples, collapse=collapse)
        return service.search_examples(examples, body.k, body.filters, body.min_score, sort=sort, offset=offset,
                                       collapse=collapse)

    if body.image_url is None:
        return await run_in_threadpool(search_stored)
    service = await run_in_threadpool(context.backends.service, body.model)
    service.check_k(body.k, body.offset)  # before any fetch
    assert context.http is not None  # opened by the app's lifespan
    fetched = await fetch_image(context.http, body.image_url, context.fetch_options)
    return await run_in_threadpool(lambda: service.search_image(
        fetched.data, body.k, body.filters, body.min_score, {"image_url": body.image_url}, sort=sort, offset=offset,
        examples=examples, collapse=collapse))


@router.post("/search/image", response_model=SearchResponse, responses=LIMITED)
async def search_image(
    context: Context,
    limits: Limits,
    file: Annotated[UploadFile, File(description="the example image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF)")],
    k: Annotated[int, Form(description="how many results (1..max_k)")] = 10,
    min_score: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    model: Annotated[str | None, Form(max_length=200, description=MODEL_HELP)] = None,
    taken_after: Annotated[str | None, Form(max_length=64, description=filter_help("taken_after"))] = None,
    taken_before: Annotated[str | None, Form(max_length=64, description=filter_help("taken_before"))] = None,
    camera: Annotated[str | None, Form(max_length=200, description=filter_help("camera"))] = None,
    near: Annotated[str | None, Form(max_length=64, description=NEAR_HELP)] = None,
    within_km: Annotated[float | None, Form(description=filter_help("within_km"))] = None,
    sort: Annotated[Sort, Form(description=SORT_HELP)] = "relevance",
    offset: Annotated[int, Form(ge=0, le=MAX_K, description=OFFSET_HELP)] = 0,
    tags: Annotated[list[str] | None, Form(max_length=MAX_FILTER_TAGS, description=TAGS_HELP)] = None,
    collapse: Annotated[bool, Form(description=COLLAPSE_HELP)] = False,
) -> SearchResponse:
    """Search by an uploaded image (multipart form field ``file``)."""
    limits.take("uploads")
    filters = filters_from(Filters, taken_after=taken_after, taken_before=taken_before, camera=camera, near=near,
                           within_km=within_km, tags=tags)
    service = await run_in_threadpool(context.backends.service, model)
    service.check_k(k, offset)
    cap = context.settings.max_upload_bytes
    data = await file.read(cap + 1)
    if len(data) > cap:
        raise ApiError(413, "too_large", f"the upload is over the cap of {cap} bytes")
    query = {"image": file.filename or "upload", "bytes": len(data)}
    return await run_in_threadpool(
        lambda: service.search_image(data, k, filters, min_score, query, sort=sort, offset=offset, collapse=collapse))
