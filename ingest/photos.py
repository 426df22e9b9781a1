"""Photo metadata for the records stored before ingest read EXIF: read from their stored files at
the next ingest (no download, and no embedding again: the vectors stay as they are)."""

from __future__ import annotations

from dataclasses import dataclass

from imagesearch.blobs import BlobMissing, BlobStore
from imagesearch.preprocess import ImageDecodeError, photo_metadata
from imagesearch.records import PhotoMetadata
from imagesearch.stores import VectorStore

BATCH = 500  # records read and written at a time


@dataclass
class PhotoBackfill:
    read: int = 0  # records that got their metadata
    dated: int = 0  # of those, with a date taken
    missing_files: int = 0  # records whose image is not in the blob storage (left unread: the next ingest tries again)

    def describe(self) -> str:
        missing = f", {self.missing_files} without their image in the blob storage" if self.missing_files else ""
        return f"read from {self.read} stored images ({self.dated} with a date taken){missing}"


def read_missing_photo_metadata(store: VectorStore, blobs: BlobStore, max_pixels: int) -> PhotoBackfill:
    """Read the EXIF of every stored record whose metadata was never read, from its stored file."""
    summary, after = PhotoBackfill(), ""
    while records := store.photo_metadata_unread(BATCH, after):
        found: dict[str, PhotoMetadata] = {}
        for record in records:
            try:
                data = blobs.get(record.id, record.format)
            except BlobMissing:
                summary.missing_files += 1
                continue
            try:
                found[record.id] = photo_metadata(data, max_pixels)
            except ImageDecodeError:  # it decoded when it was stored; whatever changed, there is nothing to read
                found[record.id] = PhotoMetadata()
        store.set_photo_metadata(found)
        summary.read += len(found)
        summary.dated += sum(1 for photo in found.values() if photo.taken_at is not None)
        after = records[-1].id
    return summary
