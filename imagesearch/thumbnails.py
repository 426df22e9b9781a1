"""Thumbnails: a small WebP of each image for the web UI's grid, which would otherwise load every
result's stored original (a phone photo is megabytes).

A thumbnail is one more blob of its image (the format ``THUMBNAIL``: ``thumbnails/ab/abcdef….webp``
beside the originals, in the folder or the bucket), so it is content-addressed like them and
``BlobStore.delete`` removes it with its image. It is made at ingest, where the image's bytes are in
hand (the downloader's and the folder scan's writes: ``thumbnail_items``, ``store_thumbnails``), and
on the first request for an image stored without one (``thumbnail``), then kept. It is a convenience:
an image that cannot be made into one, or a storage that refuses it, never fails the ingest.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from functools import partial

import numpy as np
from PIL import Image, ImageOps

from imagesearch.blobs import THUMBNAIL, BlobItem, BlobMissing, BlobReader, BlobStorageError, BlobStore
from imagesearch.config import Settings
from imagesearch.preprocess import ImageDecodeError, decode

log = logging.getLogger("imagesearch.thumbnails")

MEDIA_TYPE = "image/webp"
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # greys Pillow keeps at 16 bits (PNG, TIFF)


def make_thumbnail(data: bytes, size: int = 320, quality: int = 80, max_pixels: int = 100_000_000) -> bytes:
    """The image as a WebP whose longest side is ``size`` (aspect kept, never upscaled), turned as its
    EXIF orientation says, its first frame if animated. ``ImageDecodeError`` for what is not a usable
    image."""
    img = decode(data, max_pixels, draft=(size, size))  # a JPEG decodes at the smallest scale that covers the size
    try:
        img = _webp_mode(ImageOps.exif_transpose(img))
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "WEBP", quality=quality)
    except Exception as exc:  # Pillow raises many types for a mode or an EXIF block it cannot handle
        raise ImageDecodeError("not_an_image", f"no thumbnail can be made of it: {exc}") from None
    return out.getvalue()


def _webp_mode(img: Image.Image) -> Image.Image:
    """RGB, or RGBA where the image has transparency: what WebP stores. Converted before resizing:
    Pillow resizes a palette image by nearest neighbour only. 16-bit greys are scaled to 8 bits
    (a plain conversion clips them, turning most of the image white)."""
    if img.mode in ("RGB", "RGBA"):
        return img
    if img.mode in _SIXTEEN_BIT:
        grey = np.asarray(img).astype(np.float32) / 257.0
        img = Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8))  # "L"
    return img.convert("RGBA" if img.has_transparency_data else "RGB")


def thumbnail_items(images: Iterable[tuple[str, bytes]], settings: Settings, threads: Executor | None = None) -> list[BlobItem]:
    """The thumbnails of images just stored, (id, bytes) each, as blobs for ``store_thumbnails``; one
    that cannot be made is logged and left to the first request for it. ``threads``: made on these,
    several at once (Pillow releases the GIL while it decodes, resizes and encodes)."""
    made = (threads.map if threads is not None else map)(partial(_item, settings=settings), images)
    return [item for item in made if item is not None]


def _item(image: tuple[str, bytes], settings: Settings) -> BlobItem | None:
    image_id, data = image
    try:
        return _make(data, settings), THUMBNAIL, image_id
    except ImageDecodeError as exc:
        log.warning("no thumbnail for image %s: %s", image_id, exc)
        return None


def store_thumbnails(blobs: BlobStore, items: Sequence[BlobItem]) -> int:
    """Store thumbnails (one disk sync for them all); returns how many were stored. A storage that
    refuses them is logged, not raised: each is made again on its first request."""
    if not items:
        return 0
    stored, error = blobs.put_many(items)
    if error is not None:
        log.warning("%d thumbnails not stored (each is made on its first request): %s", len(items) - len(stored), error)
    return len(stored)


def thumbnail(blobs: BlobStore, image_id: str, fmt: str, settings: Settings) -> BlobReader:
    """The image's thumbnail to send; made from the image (format ``fmt``) and stored first if it has
    none yet (stored before thumbnails were made at ingest). ``BlobMissing`` when the image has no
    file, ``ImageDecodeError`` when it cannot be decoded, ``BlobStorageUnavailable``."""
    try:
        return blobs.open(image_id, THUMBNAIL)
    except BlobMissing:
        pass
    data = _make(blobs.get(image_id, fmt), settings)
    try:
        blobs.put(data, THUMBNAIL, image_id)
    except BlobStorageError as exc:  # sent all the same; the next request tries again
        log.warning("the thumbnail of image %s was not stored: %s", image_id, exc)
    return BlobReader(size=len(data), chunks=iter([data]))


def _make(data: bytes, settings: Settings) -> bytes:
    return make_thumbnail(data, settings.thumbnail_size, settings.thumbnail_quality, settings.max_image_pixels)
