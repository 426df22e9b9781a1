"""One ingest in one process: download (a URL list, failed URLs again) or scan (folders), and embed
with every configured model; by default both at once, the embedder starting on the first stored
records while the download or scan goes on (the store is the queue).

``Ingest`` sequences the stages and collects the summary lines; ``imagesearch ingest`` is a shell
over it (arguments in, lines out, signals to ``stop``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imagesearch.blobs import make_blob_store
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.ingest.downloader import download, retry_failed
from imagesearch.ingest.embed import EmbedWorker, embed_all
from imagesearch.ingest.folder import scan_folder
from imagesearch.ingest.handoff import DecodedHandoff
from imagesearch.ingest.photos import read_missing_photo_metadata
from imagesearch.ingest.progress import Progress
from imagesearch.ingest.tagging import describe, tag_backlog, tagger_for
from imagesearch.ingest.urls import parse_url_file
from imagesearch.model_card import load_card
from imagesearch.stores import VectorStore

log = logging.getLogger("imagesearch.ingest")


@dataclass
class IngestPlan:
    """What to ingest, as ``imagesearch ingest``'s arguments say."""

    urls: Path | None = None  # a URL list: one URL per line, optional TAB caption
    folders: list[Path] = field(default_factory=list)
    retry_failed: bool = False  # the URLs that failed before, again
    retry_removed: bool = False  # also store again what `imagesearch remove` took out
    models: list[str] = field(default_factory=list)  # embed with these only; empty: every configured model
    follow: bool = False  # embed: keep waiting for new records (a download runs elsewhere)
    idle_exit_s: float | None = None  # with follow: stop after this long with nothing to do

    @property
    def has_sources(self) -> bool:
        return bool(self.urls or self.folders or self.retry_failed)


class Ingest:
    """The stages of one ingest over one store. ``lines`` collects what each stage did; ``say``
    reports a problem with the input as it is met (a malformed line, a missing folder)."""

    def __init__(self, settings: Settings, store: VectorStore, plan: IngestPlan,
                 say: Callable[[str], None] = log.warning):
        self.settings, self.store, self.plan, self.say = settings, store, plan, say
        self.lines: list[str] = []
        self._workers: list[EmbedWorker] = []
        self._stopping = threading.Event()

    @property
    def models(self) -> list[str]:
        return self.plan.models or self.settings.model_slugs

    def stop(self) -> None:
        """Finish the embed batches in flight, then end (SIGTERM or Ctrl-C with ``follow``)."""
        self._stopping.set()
        for worker in self._workers:
            worker.stop()

    # --- stages ---------------------------------------------------------------------------------

    def download(self) -> bool:
        """The URL list, the failed URLs, the folders; False when an input could not be read."""
        return self._download(self.lines)

    def embed(self) -> None:
        """Embed what is pending with every model."""
        self._embed(self.lines)

    def _download(self, lines: list[str], handoff: DecodedHandoff | None = None) -> bool:
        ok, plan, settings = True, self.plan, self.settings
        blobs = make_blob_store(settings)
        if swept := blobs.sweep_leftovers():
            lines.append(f"images: deleted {swept} partial files left by an ingest killed mid-write")
        photos = read_missing_photo_metadata(self.store, blobs, settings.max_image_pixels)  # records stored before EXIF was read
        if photos.read or photos.missing_files:
            lines.append(f"photo metadata: {photos.describe()}")
        if plan.urls:
            if not plan.urls.is_file():
                self.say(f"error: URL file {plan.urls} does not exist")
                return False
            entries, malformed = parse_url_file(plan.urls)
            for bad in malformed:
                self.say(f"warning: {plan.urls}:{bad.line}: skipped: {bad.reason}")
            progress = Progress("download", total=len(entries))
            summary = asyncio.run(download(entries, self.store, settings, progress=progress,
                                           skip_removed=not plan.retry_removed, handoff=handoff))
            progress.close()
            lines.append(f"download: {summary.describe()}" + (f", {len(malformed)} malformed lines" if malformed else ""))
        if plan.retry_failed:
            progress = Progress("retry failed")
            summary = asyncio.run(retry_failed(self.store, settings, progress=progress, handoff=handoff))
            progress.close()
            lines.append(f"retry failed: {summary.describe()}")
        for folder in plan.folders:
            progress = Progress(f"scan {folder}")
            try:
                scan_folder(folder, self.store, settings, progress=progress, skip_removed=not plan.retry_removed,
                            handoff=handoff)
            except FileNotFoundError as exc:
                self.say(f"error: {exc}")
                ok = False
            progress.close()
            lines.append(f"folder {folder}: {progress.summary()}")
        return ok

    def _embed(self, lines: list[str], until: threading.Event | None = None, progresses: dict[str, Progress] | None = None,
               handoff: DecodedHandoff | None = None) -> None:
        """``until``: also embed what a download beside us stores, until it is set. ``progresses``:
        each model's bar, by slug (the download sets their totals when it ends)."""
        progresses = {} if progresses is None else progresses
        tagger = tagger_for(self.settings, self.models)  # its labels embedded first, the text tower closed again
        backlog = tag_backlog(self.store, tagger) if tagger is not None else 0
        try:
            for slug in self.models:  # each image is embedded with every model; images only: no text tower
                encoder = make_encoder(self.settings.for_model(slug), towers=("visual",), bulk=True)
                progress = progresses[encoder.card.slug] = Progress(f"embed ({encoder.card.slug})")
                if until is None or until.is_set():  # else the total is not known yet
                    progress.set_total(self.store.counts(encoder.card.slug).pending)
                tags = tagger if tagger is not None and tagger.model == encoder.card.slug else None
                self._workers.append(EmbedWorker(self.store, encoder, self.settings, progress, handoff, tags))
                if self._stopping.is_set():
                    self._workers[-1].stop()
            summaries = embed_all(self._workers, follow=self.plan.follow, idle_exit_s=self.plan.idle_exit_s,
                                  poll_s=0.25 if until is not None else 2.0, until=until)
            for progress in progresses.values():
                progress.close()
        finally:
            for worker in self._workers:
                worker.encoder.close()
        for slug, summary in summaries.items():
            failed = ", ".join(f"{k} {v}" for k, v in summary.failed.items()) or "none"
            name = "" if len(summaries) == 1 else f" {slug}"
            lines.append(f"embed{name}: {summary.embedded} embedded in {summary.seconds:.1f}s ({summary.rate:.1f} img/s), "
                              f"failed: {failed}")
        if tagger is not None:
            lines.append(describe(tagger, summaries[tagger.model].tagged, backlog))

    def tag_stored(self) -> None:
        """Tag, from their stored vectors, the embedded images the tagging has not seen (after an
        embedding that did not tag as it went, such as the Ray pipeline's)."""
        if (tagger := tagger_for(self.settings, self.models)) is not None:
            self.lines.append(describe(tagger, 0, tag_backlog(self.store, tagger)))

    def download_and_embed(self) -> bool:
        """Both stages at once: the download (or scan) in a thread, the embedder here on what it has
        stored so far, until the download has ended and nothing is left. Hashing and verifying the
        images overlaps the encoder instead of running before it, and the verifying decode is the
        embedder's (ingest/handoff.py)."""
        downloaded, handoff = threading.Event(), self._decoded_handoff()
        download_lines: list[str] = []
        embed_lines: list[str] = []
        outcome: list[bool | BaseException] = []
        progresses: dict[str, Progress] = {}

        def download_stage() -> None:
            try:
                outcome.append(self._download(download_lines, handoff))
                for slug, progress in list(progresses.items()):  # everything is stored: the embed bars get their totals
                    progress.set_total(progress.done + self.store.counts(slug).pending)
            except BaseException as exc:  # noqa: BLE001 - raised again below, in this thread
                outcome.append(exc)
            finally:
                downloaded.set()

        thread = threading.Thread(target=download_stage, name="download", daemon=True)
        thread.start()
        try:
            self._embed(embed_lines, until=downloaded, progresses=progresses, handoff=handoff)
        finally:
            if handoff is not None:
                handoff.close()  # an embedder that ended early leaves the download nothing to wait for
            thread.join()  # an embedder that failed (encoder down) still lets every download finish and be kept
            self.lines += download_lines + embed_lines
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def report_counts(self) -> None:
        """A line per model: images, embedded, pending, failed URLs."""
        for slug in self.models:
            counts = self.store.counts(slug or self._default_slug())
            name = "" if len(self.models) == 1 else f" ({slug})"
            self.lines.append(f"store{name}: {counts.images} images, {counts.embedded} embedded, {counts.pending} pending, "
                              f"{counts.failed_urls} failed URLs {counts.failed_by_reason or ''}".rstrip())

    # --- helpers --------------------------------------------------------------------------------

    def _decoded_handoff(self) -> DecodedHandoff | None:
        """The hand-off of decoded pixels to this process's embedders; None when it is off, or when a
        model's description cannot be read (the embedder says why)."""
        if self.settings.handoff_mb <= 0:
            return None
        try:
            cards = [load_card(self.settings.model_repository, slug) for slug in self.models]
        except (OSError, ValueError):
            return None
        return DecodedHandoff(cards, draft=self.settings.jpeg_draft, max_bytes=self.settings.handoff_mb * 2**20)

    def _default_slug(self) -> str:
        try:
            return load_card(self.settings.model_repository, self.settings.model).slug
        except FileNotFoundError:
            return ""
