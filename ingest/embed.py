"""The embed worker: records without a vector for a model -> decode/resize -> encoder -> store.

Decoding and resizing run in worker threads while the encoder works on the previous batches in
another thread (Pillow, ONNX Runtime and gRPC all release the GIL), so on a CPU box the two overlap, and with Triton
several batches are in flight to keep the server-side batcher busy. Vectors are written batch by
batch: a crash loses at most the batches in flight, and the next run picks them up again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from imagesearch.blobs import BlobMissing, BlobStore, make_blob_store
from imagesearch.config import Settings
from imagesearch.encoders import Encoder, EncoderUnavailable
from imagesearch.ingest.handoff import DecodedHandoff
from imagesearch.model_card import ModelCard
from imagesearch.preprocess import ImageDecodeError, prepare
from imagesearch.records import ImageRecord
from imagesearch.stores import StoreWriteError, VectorStore
from imagesearch.tags import Tagger

log = logging.getLogger("imagesearch.ingest")

def _decode(record: ImageRecord, blobs: BlobStore, card: ModelCard, max_pixels: int, draft: bool,
            handoff: DecodedHandoff | None) -> tuple[str, np.ndarray | None, str]:
    """A record -> (id, pixels, "") or (id, None, reason). A storage that cannot be reached is
    raised (``BlobStorageUnavailable``): not the image's fault, so not recorded against it."""
    image_id = record.id
    pixels = handoff.take(card.slug, image_id) if handoff is not None else None
    if pixels is not None:  # decoded by the download that verified it
        return image_id, pixels, ""
    try:
        data = blobs.get(image_id, record.format)
        return image_id, prepare(data, card, max_pixels=max_pixels, draft=draft), ""
    except BlobMissing:
        return image_id, None, "missing_file"
    except ImageDecodeError as exc:
        return image_id, None, exc.reason


def waiting_for_encoder(encoder: Encoder, wait_s: float) -> Callable[[np.ndarray], np.ndarray]:
    """``encoder.encode_images``, waiting up to ``wait_s`` while the encoder is unavailable. Store
    writes are not waited for here: the store waits for its backend itself (up to the same
    dependency_wait_s), so the two waits do not stack."""
    waiting = retry(
        retry=retry_if_exception_type(EncoderUnavailable),
        wait=wait_exponential(multiplier=0.5, max=15), stop=stop_after_delay(wait_s),
        before_sleep=lambda state: log.warning("waiting for the encoder: %s", state.outcome and state.outcome.exception()),
        reraise=True,
    )
    return waiting(encoder.encode_images)


def write_vectors(store: VectorStore, model: str, ids: Sequence[str], vectors: np.ndarray) -> dict[str, str]:
    """Write a batch's vectors; returns the ids the store rejected (the others were written), which
    are kept out of the queue with the reason ``store_rejected``."""
    try:
        store.set_vectors(model, ids, vectors)
        return {}
    except StoreWriteError as exc:
        rejected = {i: "store_rejected" for i in exc.failures}
        log.error("%s", exc)
        with contextlib.suppress(StoreWriteError):  # no record any more (removed meanwhile): nothing to keep out
            store.set_embed_errors(model, rejected)
        return rejected


@dataclass
class EmbedSummary:
    embedded: int = 0
    tagged: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


class EmbedWorker:
    def __init__(self, store: VectorStore, encoder: Encoder, settings: Settings, progress=None,
                 handoff: DecodedHandoff | None = None, tagger: Tagger | None = None):
        self.store, self.encoder, self.settings, self.handoff = store, encoder, settings, handoff
        self.tagger = tagger  # tags what this worker embeds (the tagging model's worker only)
        self.card = encoder.card
        self.model = self.card.slug
        self.blobs = make_blob_store(settings)
        self.batch_size = settings.batch_size
        self.inflight = max(1, settings.encoder_inflight)
        self.workers = settings.decode_workers or (os.cpu_count() or 2)
        self.progress = progress or (lambda event, n=1: None)
        self._encode = waiting_for_encoder(self.encoder, settings.dependency_wait_s)
        self.stopping = threading.Event()  # set by stop(): finish what is in flight, then return

    def stop(self) -> None:
        """Ask a running ``run`` to write what it has in flight and return (SIGTERM with --follow)."""
        self.stopping.set()

    def run(self, follow: bool = False, idle_exit_s: float | None = None, poll_s: float = 2.0,
            until: threading.Event | None = None) -> EmbedSummary:
        """Embed until nothing is pending; with ``follow``, keep polling for new records (until
        ``idle_exit_s`` seconds pass with nothing to do, if given); with ``until``, keep polling
        until it is set (a download beside it has ended), then embed what is left and return."""
        summary, started = EmbedSummary(), time.monotonic()
        self.store.ensure_model(self.model, self.card.dim, self.card.vectors_per_image)
        in_flight = _InFlight(self, summary)
        idle_since = time.monotonic()
        # Threads, not processes: Pillow releases the GIL while it decodes and resizes, and threads
        # start instantly and hand over arrays without pickling.
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as decoders, \
                ThreadPoolExecutor(self.inflight, thread_name_prefix="encode") as encoders:
            while not self.stopping.is_set():
                records = self.store.pending(self.model, self.batch_size * 4 * self.inflight, exclude=sorted(in_flight.unwritten))
                if not records:
                    in_flight.drain()
                    if self._wait_for_more(follow, idle_exit_s, poll_s, until, idle_since):
                        continue
                    break
                idle_since = time.monotonic()
                self._embed(records, in_flight, decoders, encoders, summary)
            in_flight.drain()  # stopping: what was encoded is still written
        summary.seconds = time.monotonic() - started
        return summary

    def _wait_for_more(self, follow: bool, idle_exit_s: float | None, poll_s: float, until: threading.Event | None,
                       idle_since: float) -> bool:
        """Nothing is pending now: True to look again (after waiting, if there is reason to), False to end."""
        if self.store.pending(self.model, 1):  # stored while the last batches were written
            return True
        if until is not None and not until.is_set():
            until.wait(poll_s)
            return True
        if not follow or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
            return False
        self.stopping.wait(poll_s)
        return True

    def _embed(self, records: list[ImageRecord], in_flight: _InFlight, decoders: ThreadPoolExecutor,
               encoders: ThreadPoolExecutor, summary: EmbedSummary) -> None:
        """Decode the records' images in parallel and send them to the encoder batch by batch."""
        decode = partial(_decode, blobs=self.blobs, card=self.card, max_pixels=self.settings.max_image_pixels,
                         draft=self.settings.jpeg_draft, handoff=self.handoff)
        in_flight.unwritten.update(r.id for r in records)
        ids: list[str] = []
        pixels: list[np.ndarray] = []
        errors: dict[str, str] = {}
        for image_id, array, reason in decoders.map(decode, records):
            if array is None:
                errors[image_id] = reason
                continue
            ids.append(image_id)
            pixels.append(array)
            if len(ids) == self.batch_size:
                in_flight.add(ids, encoders.submit(self._encode, np.stack(pixels)), wait=True)
                ids, pixels = [], []
        if ids:
            in_flight.add(ids, encoders.submit(self._encode, np.stack(pixels)), wait=False)
        if errors:
            self.store.set_embed_errors(self.model, errors)
            in_flight.unwritten.difference_update(errors)
            for reason in errors.values():
                summary.failed[reason] = summary.failed.get(reason, 0) + 1
                self.progress(f"failed:{reason}", 1)


class _InFlight:
    """Batches on their way through the encoder to the store, oldest first, and the ids handed out
    but not yet written (not asked for again meanwhile)."""

    def __init__(self, worker: EmbedWorker, summary: EmbedSummary):
        self.worker, self.summary = worker, summary
        self.unwritten: set[str] = set()
        self.futures: deque[tuple[list[str], Future]] = deque()

    def add(self, ids: list[str], future: Future, wait: bool) -> None:
        """``wait``: write the oldest batches until at most ``encoder_inflight`` are in flight."""
        self.futures.append((ids, future))
        while wait and len(self.futures) > self.worker.inflight:
            self.finish_one()

    def drain(self) -> None:
        while self.futures:
            self.finish_one()

    def finish_one(self) -> None:
        """Write the oldest batch's vectors; ids the store rejects are kept out of the queue."""
        worker, summary = self.worker, self.summary
        ids, future = self.futures.popleft()
        vectors = future.result()
        rejected = write_vectors(worker.store, worker.model, ids, vectors)
        self.unwritten.difference_update(ids)
        if worker.tagger is not None:  # from the vectors in hand: no reading them back
            self.tag(worker.tagger, ids, vectors, rejected)
        summary.embedded += len(ids) - len(rejected)
        worker.progress("embedded", len(ids) - len(rejected))
        for reason in rejected.values():
            summary.failed[reason] = summary.failed.get(reason, 0) + 1
            worker.progress(f"failed:{reason}", 1)

    def tag(self, tagger: Tagger, ids: list[str], vectors: np.ndarray, rejected: dict[str, str]) -> None:
        """Tag the batch's images whose vectors were written."""
        written = [n for n, image_id in enumerate(ids) if image_id not in rejected]
        try:
            tagger.write(self.worker.store, [ids[n] for n in written], vectors[written])
            self.summary.tagged += len(written)
        except StoreWriteError as exc:  # left untagged: the next ingest tags them from their stored vectors
            log.error("%s", exc)
            self.summary.tagged += len(written) - len(exc.failures)


def embed_all(workers: list[EmbedWorker], follow: bool = False, idle_exit_s: float | None = None,
              poll_s: float = 2.0, until: threading.Event | None = None) -> dict[str, EmbedSummary]:
    """Run each model's worker until nothing is pending for any (with ``follow``: keep polling;
    with ``until``: keep polling until it is set).

    One model at a time, round robin: on a CPU two encoders at once only fight over the cores, and
    a model added later catches up on every image while the others have nothing to do.
    """
    if len(workers) == 1:
        return {workers[0].model: workers[0].run(follow=follow, idle_exit_s=idle_exit_s, poll_s=poll_s, until=until)}
    summaries = {worker.model: EmbedSummary() for worker in workers}
    idle_since = time.monotonic()
    while not any(worker.stopping.is_set() for worker in workers):
        worked = False
        for worker in workers:
            done = worker.run()
            total = summaries[worker.model]
            total.embedded += done.embedded
            total.tagged += done.tagged
            total.seconds += done.seconds
            for reason, n in done.failed.items():
                total.failed[reason] = total.failed.get(reason, 0) + n
            worked = worked or bool(done.embedded or done.failed)
        if worked:
            idle_since = time.monotonic()
            continue
        if until is not None and not until.is_set():
            until.wait(poll_s)
            continue
        if not follow or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
            break
        workers[0].stopping.wait(poll_s)
    return summaries
