"""The blob-storage interface: image bytes stored under the sha256 of the bytes, written before any
record names them.

Two implementations, chosen by ``IMAGESEARCH_BLOBS``: a content-addressed folder (``folder.py``, the
default) and an S3-compatible bucket (``s3.py``). Both keep the same guarantees: a blob is complete
before ``put_many`` reports it stored (so a record never names a partial blob), writing the same
id again is harmless (same id, same bytes), ``delete`` removes it whatever its format (and its
thumbnail, stored as one more blob of the image under the format ``THUMBNAIL``), and a name never
comes from a URL or a file name.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imagesearch.formats import FORMATS
from imagesearch.records import is_image_id

BlobItem = tuple[bytes, str, "str | None"]  # (bytes, format, id or None: the bytes' sha256)

# The format under which an image's thumbnail is stored (imagesearch/thumbnails.py): a WebP under
# ``thumbnails/``, apart from the originals, so that nothing that lists the images counts it as one.
THUMBNAIL = "thumbnail"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_name(image_id: str, fmt: str) -> str:
    """``ab/abcdef….jpg``: where a blob lives below the storage's root, in either implementation;
    ``thumbnails/ab/abcdef….webp`` for the image's thumbnail (``fmt`` = ``THUMBNAIL``)."""
    check_id(image_id)
    if fmt == THUMBNAIL:
        return f"thumbnails/{image_id[:2]}/{image_id}.webp"
    return f"{image_id[:2]}/{image_id}.{FORMATS[fmt].extension if fmt in FORMATS else 'bin'}"


def check_id(image_id: str) -> None:
    if not is_image_id(image_id):  # checked before any name is built from it
        raise ValueError(f"not an image id (64 hex characters): {image_id[:80]!r}")


class BlobStorageError(OSError):
    """The storage refused or could not take a write or a read; not the image's fault. Nothing is
    recorded for the images it concerns, and the next run stores them."""


class ImagesFolderFull(BlobStorageError):
    """No room left where the image files go; the same URL or file is stored by the next run once
    there is space."""


class BlobStorageUnavailable(BlobStorageError):
    """The storage could not be reached (after waiting ``IMAGESEARCH_DEPENDENCY_WAIT_S``)."""

    def __init__(self, message: str):
        super().__init__(errno.EIO, message)


class BlobMissing(FileNotFoundError):
    """No blob under that id (never stored, or removed)."""


@dataclass
class BlobReader:
    """An open blob for the API to send: a local ``path`` (sent as a file), or ``chunks``."""

    size: int
    chunks: Iterator[bytes]
    path: Path | None = None

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


class BlobStore(Protocol):
    location: str  # where the blobs are, for messages (no credentials)

    def put(self, data: bytes, fmt: str, image_id: str | None = None) -> str:
        """Store one blob; returns its id. Idempotent. Raises ``BlobStorageError``."""
        ...

    def put_many(self, items: Sequence[BlobItem]) -> tuple[list[str], BlobStorageError | None]:
        """Store several blobs, (bytes, format, id or None) each. Returns the ids of the items
        stored, in order, up to the first that could not be (a prefix of ``items``), and the error
        that stopped the rest, if any: the blobs before it are stored whatever happens to the rest."""
        ...

    def get(self, image_id: str, fmt: str) -> bytes:
        """The blob's bytes; ``BlobMissing`` if there is none, ``BlobStorageUnavailable``."""
        ...

    def open(self, image_id: str, fmt: str) -> BlobReader:
        """The blob, to send it on (the API); ``BlobMissing`` if there is none."""
        ...

    def delete(self, image_id: str) -> int:
        """Delete the image's blob, whatever its format, and its thumbnail; returns how many image
        blobs went (0 or 1: the thumbnail is not counted)."""
        ...

    def sweep_leftovers(self) -> int:
        """Delete what writers killed mid-write left behind; returns how many went."""
        ...
