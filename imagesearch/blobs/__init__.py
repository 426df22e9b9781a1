"""Blob storage: the image bytes, content-addressed. One interface (``base.BlobStore``), two
implementations chosen by ``IMAGESEARCH_BLOBS``: the images folder in the data folder (empty, the
default) or an S3-compatible bucket (``s3://bucket/prefix``). Nothing above this package knows which
one it talks to."""

from __future__ import annotations

from imagesearch.blobs.base import (
    THUMBNAIL,
    BlobItem,
    BlobMissing,
    BlobReader,
    BlobStorageError,
    BlobStorageUnavailable,
    BlobStore,
    ImagesFolderFull,
    blob_name,
    sha256_hex,
)
from imagesearch.blobs.folder import FolderBlobStore
from imagesearch.config import Settings

__all__ = ["THUMBNAIL", "BlobItem", "BlobMissing", "BlobReader", "BlobStorageError", "BlobStorageUnavailable", "BlobStore",
           "FolderBlobStore", "ImagesFolderFull", "blob_name", "make_blob_store", "sha256_hex"]


def make_blob_store(settings: Settings, wait_s: float | None = None) -> BlobStore:
    """``wait_s``: how long a call waits for an unreachable storage (default: ``dependency_wait_s``,
    as ingest waits for its store; the API answers 503 at once instead)."""
    if settings.blobs.startswith("s3://"):
        from imagesearch.blobs.s3 import S3BlobStore  # boto3 loads only where a bucket is configured

        return S3BlobStore.from_settings(settings, settings.dependency_wait_s if wait_s is None else wait_s)
    return FolderBlobStore(settings.images_dir)
