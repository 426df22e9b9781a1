"""``/images/{id}``: the stored bytes, cacheable forever (ids are content hashes), and
``/images/{id}/thumbnail``, a small WebP of them (imagesearch/thumbnails.py); ``DELETE`` removes the
image (an admin key, when keys are configured)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from imagesearch.api.auth import require_admin
from imagesearch.api.context import Context
from imagesearch.api.errors import ERRORS, ApiError, ErrorBody
from imagesearch.blobs import BlobMissing, BlobReader
from imagesearch.formats import FORMATS, content_type
from imagesearch.preprocess import ImageDecodeError
from imagesearch.records import is_image_id
from imagesearch.removal import remove
from imagesearch.thumbnails import MEDIA_TYPE as THUMBNAIL_TYPE
from imagesearch.thumbnails import thumbnail

IMMUTABLE = "public, max-age=31536000, immutable"  # content-addressed: the bytes behind an id never change

router = APIRouter(tags=["images"])


@router.get("/images/{image_id}", responses={**ERRORS, 200: {"content": {f.content_type: {} for f in FORMATS.values()}}},
            response_class=Response)
def image(image_id: str, request: Request, context: Context) -> Response:
    """The stored bytes of an indexed image."""
    check_id(image_id)
    record = context.backends.service().store.get(image_id)
    headers = {"ETag": f'"{image_id}"', "Cache-Control": IMMUTABLE}
    if record is not None and _client_has(request, headers):
        return Response(status_code=304, headers=headers)  # the client has these bytes: no need to read them
    try:
        blob = context.blobs.open(image_id, record.format) if record else None
    except BlobMissing:
        blob = None
    if record is None or blob is None:
        raise ApiError(404, "not_found", f"no image with id {image_id}")
    return _send(blob, content_type(record.format), headers)


@router.get("/images/{image_id}/thumbnail", responses={**ERRORS, 200: {"content": {THUMBNAIL_TYPE: {}}}},
            response_class=Response)
def image_thumbnail(image_id: str, request: Request, context: Context) -> Response:
    """A small WebP of an indexed image for result grids: its longest side `IMAGESEARCH_THUMBNAIL_SIZE`
    pixels (never larger than the image), turned as its EXIF orientation says. Made at ingest, or on
    the first request for an image stored before, then kept."""
    check_id(image_id)
    record = context.backends.service().store.get(image_id)
    headers = {"ETag": f'"{image_id}-thumbnail"', "Cache-Control": IMMUTABLE}
    if record is None:
        raise ApiError(404, "not_found", f"no image with id {image_id}")
    if _client_has(request, headers):
        return Response(status_code=304, headers=headers)
    try:
        blob = thumbnail(context.blobs, image_id, record.format, context.settings)
    except BlobMissing:
        raise ApiError(404, "not_found", f"no image with id {image_id}") from None
    except ImageDecodeError as exc:  # stored, but not decodable (damaged since): nothing to make one of
        raise ApiError(404, "no_thumbnail", f"no thumbnail can be made of image {image_id}: {exc}") from None
    return _send(blob, THUMBNAIL_TYPE, headers)


def _client_has(request: Request, headers: dict[str, str]) -> bool:
    return headers["ETag"] in request.headers.get("if-none-match", "")


def _send(blob: BlobReader, media_type: str, headers: dict[str, str]) -> Response:
    if blob.path is not None:  # a local file: sent by the server from the file (sendfile)
        blob.close()
        return FileResponse(blob.path, media_type=media_type, headers=headers)
    # Streamed through the API, not redirected to the bucket: the bucket stays private (often not
    # reachable from outside at all), and the answer keeps the same ETag and caching headers.
    return StreamingResponse(blob.chunks, media_type=media_type, headers={**headers, "Content-Length": str(blob.size)})


def check_id(image_id: str) -> None:
    if not is_image_id(image_id):  # checked before any name is built from it
        raise ApiError(400, "invalid_id", "an image id is 64 lower-case hex characters (the sha256 of the bytes)")


@router.delete("/images/{image_id}", responses={**ERRORS, 403: {"model": ErrorBody}}, dependencies=[Depends(require_admin)])
def delete_image(image_id: str, context: Context) -> dict:
    """Remove an image: its record, its vectors for every model, its file; its URLs are not
    downloaded again by the next ingest (unless `--retry-removed`). 404 if there is no such image."""
    check_id(image_id)
    store = context.backends.service().store
    done = remove(store, context.blobs, [image_id])
    if not done.records and not done.files:
        raise ApiError(404, "not_found", f"no image with id {image_id}")
    return {"removed": image_id, "records": done.records, "files": done.files}
