"""`imagesearch ingest`: download (URL list, folder) and embed; by default both at once: the embedder
starts on the first stored records while the download or scan goes on (the store is the queue).

`imagesearch ingest download ...` and `imagesearch ingest embed` run the stages separately, also at
the same time in two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path

from imagesearch.config import get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", nargs="?", choices=["download", "embed"], help="run only this stage (default: both)")
    parser.add_argument("--urls", type=Path, help="URL list: one URL per line, optional TAB caption, # comments")
    parser.add_argument("--folder", type=Path, action="append", default=[], help="folder of images (recursive); repeatable")
    parser.add_argument("--retry-failed", action="store_true", help="retry only the URLs that failed before")
    parser.add_argument("--retry-removed", action="store_true", help="also store again what `imagesearch remove` took out")
    parser.add_argument("--follow", action="store_true", help="embed: keep waiting for new records (for a concurrent download)")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="S", help="with --follow: exit after S idle seconds")
    parser.add_argument("--model", action="append", default=[], metavar="SLUG",
                        help="embed with this model only (repeatable; default: every model of IMAGESEARCH_MODELS)")


def _download(args, store, settings, lines: list[str], handoff=None) -> bool:
    from imagesearch.blobs import BlobStore
    from imagesearch.ingest.downloader import download, retry_failed
    from imagesearch.ingest.folder import scan_folder
    from imagesearch.ingest.progress import Progress
    from imagesearch.ingest.urls import parse_url_file

    ok = True
    swept = BlobStore(settings.images_dir).sweep_leftovers()
    if swept:
        lines.append(f"images: deleted {swept} partial files left by an ingest killed mid-write")
    if args.urls:
        if not args.urls.is_file():
            print(f"error: URL file {args.urls} does not exist", file=sys.stderr)
            return False
        entries, malformed = parse_url_file(args.urls)
        for bad in malformed:
            print(f"warning: {args.urls}:{bad.line}: skipped: {bad.reason}", file=sys.stderr)
        progress = Progress("download", total=len(entries))
        summary = asyncio.run(download(entries, store, settings, progress=progress, skip_removed=not args.retry_removed,
                                       handoff=handoff))
        progress.close()
        lines.append(f"download: {summary.describe()}" + (f", {len(malformed)} malformed lines" if malformed else ""))
    if args.retry_failed:
        progress = Progress("retry failed")
        summary = asyncio.run(retry_failed(store, settings, progress=progress, handoff=handoff))
        progress.close()
        lines.append(f"retry failed: {summary.describe()}")
    for folder in args.folder:
        progress = Progress(f"scan {folder}")
        try:
            scan_folder(folder, store, settings, progress=progress, skip_removed=not args.retry_removed, handoff=handoff)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            ok = False
        progress.close()
        lines.append(f"folder {folder}: {progress.summary()}")
    return ok


def _embed(args, store, settings, lines: list[str], until: threading.Event | None = None,
           progresses: dict | None = None, handoff=None) -> None:
    from imagesearch.encoders import make_encoder
    from imagesearch.ingest.embed import EmbedWorker, embed_all
    from imagesearch.ingest.progress import Progress

    workers = []
    progresses = {} if progresses is None else progresses  # slug: its bar (the download sets their totals when it ends)
    try:
        for slug in args.model or settings.model_slugs:  # each image is embedded with every model
            encoder = make_encoder(settings.for_model(slug), towers=("visual",), bulk=True)  # images only: no text tower
            progress = progresses[encoder.card.slug] = Progress(f"embed ({encoder.card.slug})")
            if until is None or until.is_set():  # else the total is not known yet
                progress.set_total(store.counts(encoder.card.slug).pending)
            workers.append(EmbedWorker(store, encoder, settings, progress, handoff))
        if args.follow:  # `docker compose stop` (SIGTERM) or Ctrl-C: finish the batches in flight, then exit 0
            def stop(*_) -> None:
                for worker in workers:
                    worker.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, stop)
        summaries = embed_all(workers, follow=args.follow, idle_exit_s=args.idle_exit,
                              poll_s=0.25 if until is not None else 2.0, until=until)
        for progress in progresses.values():
            progress.close()
    finally:
        for worker in workers:
            worker.encoder.close()
    for slug, summary in summaries.items():
        failed = ", ".join(f"{k} {v}" for k, v in summary.failed.items()) or "none"
        name = "" if len(summaries) == 1 else f" {slug}"
        lines.append(f"embed{name}: {summary.embedded} embedded in {summary.seconds:.1f}s ({summary.rate:.1f} img/s), "
                     f"failed: {failed}")


def _download_while_embedding(args, store, settings, lines: list[str]) -> bool:
    """Both stages at once: the download (or scan) in a thread, the embedder here on what it has
    stored so far, until the download has ended and nothing is left. Hashing and verifying the
    images overlaps the encoder instead of running before it, and the verifying decode is the
    embedder's (ingest/handoff.py)."""
    downloaded = threading.Event()
    handoff = _decoded_handoff(args, settings)
    download_lines: list[str] = []
    ok: list[bool] = []
    errors: list[BaseException] = []
    progresses: dict = {}

    def download_stage() -> None:
        try:
            ok.append(_download(args, store, settings, download_lines, handoff))
            for slug, progress in list(progresses.items()):  # everything is stored: the embed bars get their totals
                progress.set_total(progress.done + store.counts(slug).pending)
        except BaseException as exc:  # noqa: BLE001 - raised again below, in this thread
            errors.append(exc)
        finally:
            downloaded.set()

    thread = threading.Thread(target=download_stage, name="download", daemon=True)
    thread.start()
    embed_lines: list[str] = []
    try:
        _embed(args, store, settings, embed_lines, until=downloaded, progresses=progresses, handoff=handoff)
    finally:
        if handoff is not None:
            handoff.close()  # an embedder that ended early leaves the download nothing to wait for
        thread.join()  # an embedder that failed (encoder down) still lets every download finish and be kept
        lines.extend(download_lines + embed_lines)
    if errors:
        raise errors[0]
    return ok == [True]


def run(args: argparse.Namespace) -> int:
    from imagesearch.blobs import ImagesFolderFull
    from imagesearch.encoders import EncoderUnavailable
    from imagesearch.stores import StoreUnavailable, make_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for chatty in ("elastic_transport", "aiohttp"):  # a line per request drowns the progress; their warnings stay
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = get_settings()
    if args.stage != "embed" and not (args.urls or args.folder or args.retry_failed):
        print("nothing to ingest: give --urls FILE, --folder DIR or --retry-failed", file=sys.stderr)
        return 2
    store = make_store(settings)
    lines: list[str] = []
    ok = True
    try:
        if args.stage == "download":
            ok = _download(args, store, settings, lines)
        else:
            if args.stage == "embed":
                _embed(args, store, settings, lines)
            else:
                ok = _download_while_embedding(args, store, settings, lines)
            if not args.follow:  # searchable at once (Elasticsearch), the local store's index saved for the API
                store.refresh()
        for slug in args.model or settings.model_slugs:
            counts = store.counts(slug or _active_slug(settings))
            name = "" if len(args.model or settings.model_slugs) == 1 else f" ({slug})"
            lines.append(f"store{name}: {counts.images} images, {counts.embedded} embedded, {counts.pending} pending, "
                         f"{counts.failed_urls} failed URLs {counts.failed_by_reason or ''}".rstrip())
    except (EncoderUnavailable, StoreUnavailable, ImagesFolderFull) as exc:  # a message to act on, not a traceback
        print("\n".join(lines + [f"error: {exc.strerror if isinstance(exc, OSError) else exc}"]), file=sys.stderr)
        return 1
    finally:
        store.close()
    print("\n".join(lines))
    return 0 if ok else 1


def _decoded_handoff(args, settings):
    """The hand-off of decoded pixels to this process's embedders; None when it is off, or when a
    model's description cannot be read (the embedder says why)."""
    from imagesearch.ingest.handoff import DecodedHandoff
    from imagesearch.model_card import load_card

    if settings.handoff_mb <= 0:
        return None
    try:
        cards = [load_card(settings.model_repository, slug) for slug in args.model or settings.model_slugs]
    except (OSError, ValueError):
        return None
    return DecodedHandoff(cards, draft=settings.jpeg_draft, max_bytes=settings.handoff_mb * 2**20)


def _active_slug(settings) -> str:
    from imagesearch.model_card import load_card

    try:
        return load_card(settings.model_repository, settings.model).slug
    except FileNotFoundError:
        return ""
