"""Download a URL list into the store: polite (bounded concurrency in total and per host, each
host's robots.txt obeyed, see imagesearch/robots.py; imagesearch/fetch.py for retries, limits and
the SSRF guard), incremental and crash-safe.

Incremental: URLs that already have an image, or that failed in an earlier run, are skipped
(``retry_failed`` retries exactly the failures). Crash-safe: in small batches, the bytes are
written first (content-addressed, atomic, synced), then the records, so a kill loses at most the
few batches still in memory (the next run fetches them again) and never leaves a record without
its file. Each batch's thumbnails (imagesearch/thumbnails.py) are made from the bytes in hand and
stored right after its files.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from imagesearch.blobs import BlobStore, make_blob_store
from imagesearch.config import Settings
from imagesearch.fetch import FetchedImage, FetchError, FetchOptions, fetch_image, make_client
from imagesearch.ingest.handoff import DecodedHandoff
from imagesearch.ingest.urls import UrlEntry
from imagesearch.records import ImageRecord, UrlFailure
from imagesearch.robots import RobotsRules
from imagesearch.stores import VectorStore
from imagesearch.thumbnails import store_thumbnails, thumbnail_items

Progress = Callable[[str, int], None]  # (event, n): downloaded, duplicate, known, skipped, failed:<reason>
_CHUNK = 1000  # entries looked up in the store at a time
_FLUSH_EVERY_S = 1.0
_FILE_BATCHES_WAITING = 4  # batches of fetched bytes held in memory while the disk catches up


@dataclass
class DownloadSummary:
    total: int = 0  # URLs given
    downloaded: int = 0  # new images stored
    duplicates: int = 0  # bytes already stored under another URL: one record, one more URL
    already_known: int = 0  # URLs with an image from an earlier run
    skipped_failed: int = 0  # URLs that failed in an earlier run (see retry_failed)
    skipped_removed: int = 0  # URLs of removed images (see skip_removed)
    failed: Counter = field(default_factory=Counter)  # reason -> URLs
    seconds: float = 0.0

    @property
    def fetched(self) -> int:
        return self.downloaded + self.duplicates + sum(self.failed.values())

    @property
    def rate(self) -> float:
        return self.fetched / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        failed = ", ".join(f"{reason} {n}" for reason, n in sorted(self.failed.items()))
        parts = [f"{self.downloaded} downloaded", f"{self.duplicates} duplicates", f"{self.already_known} already known"]
        if self.skipped_failed:
            parts.append(f"{self.skipped_failed} skipped (failed before; use --retry-failed)")
        if self.skipped_removed:
            parts.append(f"{self.skipped_removed} skipped (removed; use --retry-removed)")
        parts.append(f"{sum(self.failed.values())} failed" + (f" ({failed})" if failed else ""))
        return ", ".join(parts) + f" in {self.seconds:.1f}s ({self.rate:.1f} URLs/s)"


class _BatchWriter:
    """Stores results in batches, off the event loop and in order: each batch's image files on one
    thread (hash, write, one sync for the batch), then its records on another. Per batch, not per
    image: a hand-off to a thread per image cost more CPU (threads taking turns at the GIL) than
    the write itself.

    The store is synchronous and waits while its backend is down (up to ``dependency_wait_s``); on
    its own thread that wait holds up no fetch: records queue in memory meanwhile and are written
    when the store is back. The files' thread is bounded instead (a few batches of bytes wait for
    it, then the fetches do). A write that finally fails is raised by the next ``add`` or by
    ``close``, after the records of the files written before it.
    """

    def __init__(self, store: VectorStore, blobs: BlobStore, settings: Settings, summary: DownloadSummary,
                 progress: Progress | None, handoff: DecodedHandoff | None = None):
        self.store, self.blobs, self.settings, self.summary = store, blobs, settings, summary
        self.batch = settings.download_write_batch
        self.progress, self.handoff = progress, handoff
        self.images: list[tuple[UrlEntry, FetchedImage]] = []
        self.failures: list[UrlFailure] = []
        self.last_flush = time.monotonic()
        self._files_thread = ThreadPoolExecutor(1, thread_name_prefix="image-writer")
        # A batch's thumbnails are made on all cores: on the files' one thread alone, large photos would
        # hold up the writes (and so the fetches) while the other cores wait.
        self._thumbnail_threads = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="thumbnails")
        self._records_thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._files: list[Future] = []  # batches of files being written, oldest first
        self._pending: list[Future] = []  # batches of records being written, oldest first

    async def add(self, item: tuple[UrlEntry, FetchedImage] | UrlFailure) -> None:
        if isinstance(item, UrlFailure):
            self.failures.append(item)
        else:
            self.images.append(item)
        if len(self.images) + len(self.failures) >= self.batch or time.monotonic() - self.last_flush > _FLUSH_EVERY_S:
            self.flush()
        while len(self._files) > _FILE_BATCHES_WAITING:  # the disk is behind: the fetches wait for it
            await asyncio.wrap_future(self._files[0])
            self._files = [f for f in self._files if not f.done()]

    def flush(self) -> None:
        """Hand the collected batch to the writer threads (returns at once)."""
        images, failures, self.images, self.failures = self.images, self.failures, [], []
        self.last_flush = time.monotonic()
        for done in [f for f in self._pending if f.done()]:
            self._pending.remove(done)
            done.result()  # a write that failed for good stops the download here
        self._files = [f for f in self._files if not f.done()]
        if images or failures:
            files = self._files_thread.submit(self._write_files, images)
            self._files.append(files)
            self._pending.append(self._records_thread.submit(self._write_records, files, failures))

    async def close(self) -> None:
        """Write what is left and wait for every write (also after Ctrl-C or an error)."""
        try:
            self.flush()
            for future in self._pending:
                await asyncio.wrap_future(future)
        finally:
            self._files_thread.shutdown(wait=True)
            self._records_thread.shutdown(wait=True)
            self._thumbnail_threads.shutdown(wait=True)

    def _write_files(self, images: list[tuple[UrlEntry, FetchedImage]]) -> tuple[list[ImageRecord], OSError | None]:
        """The batch's files, stored before their records exist (one sync for the batch); the
        records of those stored, and the error that stopped the rest (a full disk), if any. Then the
        thumbnails of those stored."""
        stored, error = self.blobs.put_many([(image.data, image.info.format, None) for _, image in images])
        made = zip(stored, [image.data for _, image in images[: len(stored)]], strict=True)  # a prefix
        store_thumbnails(self.blobs, thumbnail_items(made, self.settings, self._thumbnail_threads))
        records = [
            ImageRecord(id=image_id, urls=[entry.url], captions=[entry.caption] if entry.caption else [],
                        sources=["url"], width=image.info.width, height=image.info.height, format=image.info.format,
                        bytes=len(image.data), photo=image.info.photo)
            for image_id, (entry, image) in zip(stored, images[: len(stored)], strict=True)  # a prefix
        ]
        return records, error

    def _write_records(self, files: Future, failures: list[UrlFailure]) -> None:
        records, error = files.result()
        if records:
            created = self.store.upsert_images(records)
            if self.handoff is not None:
                self.handoff.stored(records, created)
            new = sum(created)
            self.summary.downloaded += new
            self.summary.duplicates += len(created) - new
            self.notify("downloaded", new)
            self.notify("duplicate", len(created) - new)
        if failures:
            self.store.record_failures(failures)
            reasons = Counter(f.reason for f in failures)
            self.summary.failed.update(reasons)
            for reason, n in reasons.items():
                self.notify(f"failed:{reason}", n)
        if error is not None:
            raise error

    def notify(self, event: str, n: int) -> None:
        if self.progress is not None and n:
            self.progress(event, n)


async def download(urls: Iterable[UrlEntry | str], store: VectorStore, settings: Settings,
                   progress: Progress | None = None, *, blobs: BlobStore | None = None,
                   skip_failed: bool = True, skip_removed: bool = True,
                   handoff: DecodedHandoff | None = None) -> DownloadSummary:
    """Fetch every entry not already in the store; returns what happened, by outcome. ``handoff``:
    an embedder in this process takes the pixels of the verifying decode (ingest/handoff.py)."""
    entries = [e if isinstance(e, UrlEntry) else UrlEntry(e) for e in urls]
    run = _DownloadRun(entries, store, settings, blobs or make_blob_store(settings), progress, handoff)
    return await run.run(skip_failed, skip_removed)


class _DownloadRun:
    """One download: a producer queues the entries the store does not know yet, workers fetch them
    (bounded in total and per host, robots.txt obeyed) and hand the results to the batch writer."""

    def __init__(self, entries: list[UrlEntry], store: VectorStore, settings: Settings, blobs: BlobStore,
                 progress: Progress | None, handoff: DecodedHandoff | None):
        self.entries, self.store, self.settings, self.handoff = entries, store, settings, handoff
        self.options = FetchOptions.from_settings(settings)
        self.summary = DownloadSummary(total=len(entries))
        self.writer = _BatchWriter(store, blobs, settings, self.summary, progress, handoff)
        self.queue: asyncio.Queue[UrlEntry | None] = asyncio.Queue(maxsize=2 * settings.download_concurrency)
        self.per_host: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(settings.download_per_host))
        self.client = make_client(self.options, max_connections=settings.download_concurrency)
        self.robots = RobotsRules(self.client, self.options) if settings.download_obey_robots else None

    async def run(self, skip_failed: bool, skip_removed: bool) -> DownloadSummary:
        started = time.monotonic()
        workers = max(1, min(self.settings.download_concurrency, len(self.entries)))
        tasks = [asyncio.create_task(self.produce(workers, skip_failed, skip_removed))]
        tasks += [asyncio.create_task(self.work()) for _ in range(workers)]
        tasks.append(asyncio.create_task(self.flush_on_time(list(tasks))))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.client.close()
            await self.writer.close()  # also on Ctrl-C or an error: keep what was done
            self.summary.seconds = time.monotonic() - started
        return self.summary

    async def produce(self, workers: int, skip_failed: bool, skip_removed: bool) -> None:
        """Queue the entries that have no image, did not fail before and were not removed."""
        # Every store call runs off the event loop: a slow or down store must not stall the fetches.
        store, summary = self.store, self.summary
        failed_before = {f.url for f in await asyncio.to_thread(store.failures)} if skip_failed else set()
        for start in range(0, len(self.entries), _CHUNK):
            chunk = self.entries[start : start + _CHUNK]
            known = await asyncio.to_thread(store.known_urls, [e.url for e in chunk])
            removed = await asyncio.to_thread(store.removed_urls, [e.url for e in chunk]) if skip_removed else set()
            skipped = [e for e in chunk if e.url in failed_before and e.url not in known | removed]
            gone = [e for e in chunk if e.url in removed and e.url not in known]
            summary.already_known += len(known)
            summary.skipped_failed += len(skipped)
            summary.skipped_removed += len(gone)
            self.writer.notify("known", len(known))
            self.writer.notify("skipped", len(skipped) + len(gone))
            for entry in chunk:
                if entry.url not in known and entry.url not in failed_before and entry.url not in removed:
                    await self.queue.put(entry)
        for _ in range(workers):
            await self.queue.put(None)  # one stop sign per worker

    async def work(self) -> None:
        while (entry := await self.queue.get()) is not None:
            await self.fetch_one(entry)

    async def fetch_one(self, entry: UrlEntry) -> None:
        if self.robots is not None:
            verdict = await self.robots.check(entry.url)
            if not verdict.allowed:
                await self.writer.add(UrlFailure(url=entry.url, reason="robots", detail=verdict.detail, caption=entry.caption))
                return
        async with self.per_host[urlsplit(entry.url).hostname or ""]:
            if self.robots is not None:
                await self.robots.pace(entry.url)
            try:
                image = await fetch_image(self.client, entry.url, self.options,
                                          verify=self.handoff.verify if self.handoff else None)
            except FetchError as exc:
                await self.writer.add(UrlFailure(url=entry.url, reason=exc.reason, detail=exc.detail,
                                                 caption=entry.caption, attempts=exc.attempts))
                return
        await self.writer.add((entry, image))  # hashed and written to disk by the writer's thread

    async def flush_on_time(self, fetching: list[asyncio.Task]) -> None:
        """Write what came in at least every second, also while no new result arrives (slow URLs)."""
        while not all(task.done() for task in fetching):
            await asyncio.sleep(_FLUSH_EVERY_S / 4)
            if time.monotonic() - self.writer.last_flush >= _FLUSH_EVERY_S:
                self.writer.flush()


async def retry_failed(store: VectorStore, settings: Settings, progress: Progress | None = None, *,
                       blobs: BlobStore | None = None, handoff: DecodedHandoff | None = None) -> DownloadSummary:
    """Fetch again only the URLs that failed before (their attempts add up in the store)."""
    entries = [UrlEntry(f.url, f.caption) for f in await asyncio.to_thread(store.failures)]
    return await download(entries, store, settings, progress, blobs=blobs, skip_failed=False, handoff=handoff)
