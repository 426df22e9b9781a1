"""``/images/{id}``: the stored bytes, cacheable forever (ids are content hashes)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from api.context import Context
from api.errors import ERRORS, ApiError
from imagesearch.formats import FORMATS, content_type
from imagesearch.records import is_image_id

IMMUTABLE = "public, max-age=31536000, immutable"  # content-addressed: the bytes behind an id never change

router = APIRouter(tags=["images"])


@router.get("/images/{image_id}", responses={**ERRORS, 200: {"content": {f.content_type: {} for f in FORMATS.values()}}},
            response_class=Response)
def image(image_id: str, request: Request, context: Context) -> Response:
    """The stored bytes of an indexed image."""
    if not is_image_id(image_id):  # checked before any path is built from it
        raise ApiError(400, "invalid_id", "an image id is 64 lower-case hex characters (the sha256 of the bytes)")
    record = context.backends.service().store.get(image_id)
    path = context.blobs.path(image_id, record.format) if record else None
    if record is None or path is None or not path.is_file():
        raise ApiError(404, "not_found", f"no image with id {image_id}")
    etag = f'"{image_id}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=content_type(record.format), headers=headers)
