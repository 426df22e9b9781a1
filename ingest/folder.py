"""Folder scanner: every image file below a folder becomes a record (source "folder"), its bytes
stored with their thumbnail."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from imagesearch.blobs import BlobItem, BlobStorageError, make_blob_store, sha256_hex
from imagesearch.config import Settings
from imagesearch.formats import FILE_SUFFIXES
from imagesearch.ingest.handoff import DecodedHandoff
from imagesearch.preprocess import ImageDecodeError, probe
from imagesearch.records import ImageRecord
from imagesearch.stores import VectorStore
from imagesearch.thumbnails import store_thumbnails, thumbnail_items


def image_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in FILE_SUFFIXES and not name.startswith("."):
                yield Path(dirpath) / name


def scan_folder(root: Path, store: VectorStore, settings: Settings,
                progress: Callable[[str, int], None] | None = None, skip_removed: bool = True,
                handoff: DecodedHandoff | None = None) -> None:
    """Store every new image under ``root``. A file whose bytes are already stored under the same path
    costs one read and a hash: re-running on the same folder does no other work. ``handoff``: an
    embedder in this process takes the pixels of the verifying decode (ingest/handoff.py)."""
    progress = progress or (lambda event, n: None)
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"folder {root} does not exist")
    blobs = make_blob_store(settings)
    pending: list[ImageRecord] = []
    thumbnails: list[BlobItem] = []  # the new images' (small): stored a batch at a time, with one disk sync

    def flush() -> None:
        store_thumbnails(blobs, thumbnails)
        thumbnails.clear()
        if pending:
            created = store.upsert_images(pending)
            for new in created:
                progress("stored" if new else "duplicate", 1)
            if handoff is not None:
                handoff.stored(pending, created)
            pending.clear()

    try:
        for path in image_files(root):
            try:
                data = path.read_bytes()
            except OSError as exc:
                progress(f"failed:unreadable ({exc.strerror})", 1)
                continue
            image_id = sha256_hex(data)
            if skip_removed and store.removed_ids([image_id]):
                progress("removed", 1)  # taken out on purpose: `--retry-removed` brings it back
                continue
            existing = store.get(image_id)
            if existing is not None and str(path) in existing.paths:
                progress("known", 1)
                continue
            try:
                if handoff is not None and existing is None:  # new bytes: the embedder will want them
                    info = handoff.verify(data, settings.max_image_pixels, image_id, before_waiting=flush)
                else:
                    info = probe(data, settings.max_image_pixels)
            except ImageDecodeError as exc:
                progress(f"failed:{exc.reason}", 1)
                continue
            blobs.put(data, info.format, image_id)
            if existing is None:  # new bytes (known ones have their thumbnail, or get it on request)
                thumbnails += thumbnail_items([(image_id, data)], settings)
            pending.append(ImageRecord(id=image_id, paths=[str(path)], sources=["folder"], width=info.width,
                                       height=info.height, format=info.format, bytes=len(data), photo=info.photo))
            if len(pending) >= settings.download_write_batch:
                flush()
    except BlobStorageError:  # a full disk, an unreachable bucket
        flush()  # the files already stored get their records; the rerun goes on from there
        raise
    flush()
