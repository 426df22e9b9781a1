"""The stages of the Ray pipeline (ingest/ray_pipeline.py), as they run inside Ray tasks and actors.

Each stage is a thin shell over the one-machine ingest's own functions: the URL list's parser
(ingest/urls.py), the downloader with its guarded fetch, robots.txt and per-host limits
(ingest/downloader.py), the decoder (imagesearch/preprocess.py), the encoder and the store's
writes (ingest/embed.py). Ray distributes the work; it does not get a second copy of it.

Nothing here imports ray: the driver wraps these in Ray's calls, so this module is importable
(and testable) without the ``ray`` extra.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from imagesearch.blobs import BlobMissing, BlobStore, make_blob_store
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.ingest.downloader import download
from imagesearch.ingest.embed import waiting_for_encoder, write_vectors
from imagesearch.ingest.handoff import DecodedHandoff
from imagesearch.ingest.urls import UrlEntry, parse_url_lines
from imagesearch.model_card import ModelCard
from imagesearch.preprocess import ImageDecodeError, prepare
from imagesearch.records import ImageRecord
from imagesearch.stores import make_store

Batch = dict[str, np.ndarray]
URL_COLUMNS = ("url", "URL")  # img2dataset's input column, and LAION's parquet files'
CAPTION_COLUMNS = ("caption", "TEXT", "text")
_READERS = 8  # blob reads in flight per decode task: an S3 GET waits on the network, not on the CPU


class Tally:
    """Counts by event from every task and actor (downloaded, failed:<reason>, embedded:<slug>, ...)
    for the progress, and each part's download summary for the last lines; a Ray actor
    (``ray.remote(Tally)``) that the driver reads."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.parts: dict[int, dict[str, int]] = {}

    def add(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def part_done(self, part: int, summary: dict[str, int]) -> None:
        """A part's summary, kept once: Ray runs a part again when the node that held its result is
        lost, and the second run finds its URLs already known."""
        if part in self.parts:
            self.counts["parts_run_again"] += 1
        else:
            self.parts[part] = summary

    def snapshot(self) -> dict[str, int]:
        total = Counter(self.counts)
        for summary in self.parts.values():
            total.update(summary)
        return dict(total)


def host_part(url: str, parts: int) -> int:
    """The part a URL's host belongs to; every URL of a host is in the same part."""
    return zlib.crc32((urlsplit(url).hostname or "").encode()) % parts


def parse_rows(batch: Batch, parts: int, tally: Any) -> Batch:
    """Rows of a URL list -> url, caption, part. Text and TSV lists come as ``text`` (a line each);
    tables (Parquet, CSV) as a URL column and an optional caption column. Lines that are not http(s)
    URLs are counted as ``malformed`` and dropped, as the one-machine ingest skips them."""
    if "text" in batch and not any(c in batch for c in URL_COLUMNS):
        lines = [str(line) for line in batch["text"]]
    else:
        urls = next((batch[c] for c in URL_COLUMNS if c in batch), None)
        if urls is None:
            raise ValueError(f"the URL list has no URL column (one of {', '.join(URL_COLUMNS)}); it has {', '.join(batch)}")
        captions = next((batch[c] for c in CAPTION_COLUMNS if c in batch), None)
        lines = [f"{u}\t{'' if captions is None or captions[i] is None else captions[i]}" for i, u in enumerate(urls)]
    entries, malformed = parse_url_lines(lines)
    if malformed:
        tally.add.remote({"malformed": len(malformed)})
    return {"url": np.array([e.url for e in entries], dtype=object),
            "caption": np.array([e.caption for e in entries], dtype=object),
            "part": np.array([host_part(e.url, parts) for e in entries], dtype=np.int64)}


class _NewImages(DecodedHandoff):
    """The downloader's hand-off hook, used only to learn which records are new: their ids go on
    to the decode and embed stages, which may run on other machines. It keeps no pixels."""

    def __init__(self) -> None:
        super().__init__([], draft=False, max_bytes=0)
        self.records: list[ImageRecord] = []

    def stored(self, records: Sequence[ImageRecord], created: Sequence[bool]) -> None:
        self.records += [record for record, new in zip(records, created, strict=True) if new]


def download_part(batch: Batch, settings: Settings, tally: Any, skip_removed: bool = True) -> Batch:
    """One part of the list (all the URLs of its hosts) through the one-machine downloader: polite,
    incremental, files before records. Returns the id and format of each image it stored new."""
    first: dict[str, UrlEntry] = {}
    for url, caption in zip(batch["url"], batch["caption"], strict=True):
        first.setdefault(str(url), UrlEntry(str(url), str(caption)))  # a URL listed twice: the first caption
    entries = list(first.values())
    new = _NewImages()
    store = make_store(settings)
    try:
        summary = asyncio.run(download(entries, store, settings, progress=lambda event, n: tally.add.remote({event: n}),
                                       blobs=_blob_store(settings), skip_removed=skip_removed, handoff=new))
    finally:
        store.close()
    fields = ("total", "downloaded", "duplicates", "already_known", "skipped_failed", "skipped_removed")
    tally.part_done.remote(int(batch["part"][0]), {**{f"summary:{name}": getattr(summary, name) for name in fields},
                                                   **{f"summary:failed:{r}": n for r, n in summary.failed.items()}})
    return {"id": np.array([r.id for r in new.records], dtype=object),
            "format": np.array([r.format for r in new.records], dtype=object)}


_blob_stores: dict[tuple, BlobStore] = {}


def _blob_store(settings: Settings) -> BlobStore:
    """One client per worker process and storage (Ray reuses its worker processes)."""
    key = (settings.blobs, settings.images_dir, settings.s3_endpoint_url, settings.s3_access_key_id)
    if key not in _blob_stores:
        _blob_stores[key] = make_blob_store(settings)
    return _blob_stores[key]


def decode_batch(batch: Batch, settings: Settings, cards: Sequence[ModelCard]) -> Batch:
    """Stored images -> each model's input pixels (``pixels_<n>``, the n-th model) and a ``reason``
    ("" when decoded). A missing file or an undecodable one is a reason; a storage that cannot be
    reached fails the task (Ray retries it; nothing is recorded against the images)."""
    blobs = _blob_store(settings)
    ids, formats = list(batch["id"]), list(batch["format"])
    reasons = [""] * len(ids)
    pixels = [np.zeros((len(ids), c.image_size, c.image_size, 3), dtype=np.uint8) for c in cards]

    def read(i: int) -> bytes | None:
        try:
            return blobs.get(ids[i], formats[i])
        except BlobMissing:
            return None

    with ThreadPoolExecutor(_READERS) as readers:
        for i, data in enumerate(readers.map(read, range(len(ids)))):
            if data is None:
                reasons[i] = "missing_file"
                continue
            try:
                for n, card in enumerate(cards):
                    pixels[n][i] = prepare(data, card, max_pixels=settings.max_image_pixels, draft=settings.jpeg_draft)
            except ImageDecodeError as exc:
                reasons[i] = exc.reason
    return {"id": batch["id"], "format": batch["format"], "reason": np.array(reasons, dtype=object),
            **{f"pixels_{n}": array for n, array in enumerate(pixels)}}


class EmbedBatches:
    """An embed actor: holds one model's encoder (ONNX Runtime on its GPU or CPUs, or a Triton
    client) and writes each batch's vectors to the store in one bulk write; the images that could
    not be decoded get their reason, so that they leave the queue as in the one-machine embedder."""

    def __init__(self, settings: Settings, slug: str, column: str, tally: Any):
        self.slug, self.column, self.tally = slug, column, tally
        self.encoder = make_encoder(settings.for_model(slug), towers=("visual",), bulk=True)
        self.encode: Callable[[np.ndarray], np.ndarray] = waiting_for_encoder(self.encoder, settings.dependency_wait_s)
        self.store = make_store(settings)

    def __call__(self, batch: Batch) -> Batch:
        ok = batch["reason"] == ""
        ids = [str(i) for i in batch["id"][ok]]
        counts: Counter[str] = Counter()
        if ids:
            rejected = write_vectors(self.store, self.slug, ids, self.encode(batch[self.column][ok]))
            counts[f"embedded:{self.slug}"] += len(ids) - len(rejected)
            counts.update(f"embed_failed:{self.slug}:{reason}" for reason in rejected.values())
        errors = {str(i): str(r) for i, r in zip(batch["id"][~ok], batch["reason"][~ok], strict=True)}
        if errors:
            self.store.set_embed_errors(self.slug, errors)
            counts.update(f"embed_failed:{self.slug}:{reason}" for reason in errors.values())
        self.tally.add.remote(dict(counts))
        return {key: value for key, value in batch.items() if key != self.column}  # the next model's pixels go on
