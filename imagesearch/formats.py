"""The image formats the system accepts: one table for decoding, storing, serving and scanning.

Pillow decodes them all: HEIC/HEIF (phones) through pillow-heif, registered as Pillow's opener by
``imagesearch.preprocess``; AVIF with Pillow's own plugin (its wheels include libavif).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    name: str  # as stored in records and used by the format filter: Pillow's name, lower case
    pillow: str  # Pillow's ``Image.format``
    extension: str  # of the stored file
    suffixes: tuple[str, ...]  # file names the folder scanner and the upload form take (any letter case)
    content_type: str


FORMATS: dict[str, ImageFormat] = {f.name: f for f in (
    ImageFormat("jpeg", "JPEG", "jpg", (".jpg", ".jpeg"), "image/jpeg"),
    ImageFormat("png", "PNG", "png", (".png",), "image/png"),
    ImageFormat("webp", "WEBP", "webp", (".webp",), "image/webp"),
    ImageFormat("gif", "GIF", "gif", (".gif",), "image/gif"),
    ImageFormat("bmp", "BMP", "bmp", (".bmp",), "image/bmp"),
    ImageFormat("tiff", "TIFF", "tiff", (".tif", ".tiff"), "image/tiff"),
    # HEVC-coded HEIF, what phones write (pillow-heif decodes no other coding): image/heic
    ImageFormat("heif", "HEIF", "heic", (".heic", ".heif", ".hif"), "image/heic"),
    ImageFormat("avif", "AVIF", "avif", (".avif",), "image/avif"),
)}
PILLOW_FORMATS = frozenset(f.pillow for f in FORMATS.values())
FILE_SUFFIXES = frozenset(s for f in FORMATS.values() for s in f.suffixes)


def content_type(name: str) -> str:
    return FORMATS[name].content_type if name in FORMATS else "application/octet-stream"
