"""`imagesearch ingest`: download (URL list, folder) and embed; by default both, one after the other.

`imagesearch ingest download ...` and `imagesearch ingest embed` run the stages separately, also at
the same time in two processes (the store is the work queue between them).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
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


def _download(args, store, settings, lines: list[str]) -> bool:
    from ingest.downloader import download, retry_failed
    from ingest.folder import scan_folder
    from ingest.progress import Progress
    from ingest.urls import parse_url_file

    ok = True
    if args.urls:
        if not args.urls.is_file():
            print(f"error: URL file {args.urls} does not exist", file=sys.stderr)
            return False
        entries, malformed = parse_url_file(args.urls)
        for bad in malformed:
            print(f"warning: {args.urls}:{bad.line}: skipped: {bad.reason}", file=sys.stderr)
        progress = Progress("download", total=len(entries))
        summary = asyncio.run(download(entries, store, settings, progress=progress, skip_removed=not args.retry_removed))
        progress.close()
        lines.append(f"download: {summary.describe()}" + (f", {len(malformed)} malformed lines" if malformed else ""))
    if args.retry_failed:
        progress = Progress("retry failed")
        summary = asyncio.run(retry_failed(store, settings, progress=progress))
        progress.close()
        lines.append(f"retry failed: {summary.describe()}")
    for folder in args.folder:
        progress = Progress(f"scan {folder}")
        try:
            scan_folder(folder, store, settings, progress=progress, skip_removed=not args.retry_removed)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            ok = False
        progress.close()
        lines.append(f"folder {folder}: {progress.summary()}")
    return ok


def _embed(args, store, settings, lines: list[str]) -> None:
    from imagesearch.encoders import make_encoder
    from ingest.embed import EmbedWorker
    from ingest.progress import Progress

    encoder = make_encoder(settings)
    try:
        progress = Progress(f"embed ({encoder.card.slug})", total=store.counts(encoder.card.slug).pending)
        worker = EmbedWorker(store, encoder, settings, progress)
        if args.follow:  # `docker compose stop` (SIGTERM) or Ctrl-C: finish the batches in flight, then exit 0
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: worker.stop())
        summary = worker.run(follow=args.follow, idle_exit_s=args.idle_exit)
        progress.close()
    finally:
        encoder.close()
    failed = ", ".join(f"{k} {v}" for k, v in summary.failed.items()) or "none"
    lines.append(f"embed: {summary.embedded} embedded in {summary.seconds:.1f}s ({summary.rate:.1f} img/s), failed: {failed}")


def run(args: argparse.Namespace) -> int:
    from imagesearch.blobs import ImagesFolderFull
    from imagesearch.encoders import EncoderUnavailable
    from imagesearch.stores import StoreUnavailable, make_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for chatty in ("elastic_transport", "httpx"):  # a line per request drowns the progress; their warnings stay
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = get_settings()
    if args.stage != "embed" and not (args.urls or args.folder or args.retry_failed):
        print("nothing to ingest: give --urls FILE, --folder DIR or --retry-failed", file=sys.stderr)
        return 2
    store = make_store(settings)
    lines: list[str] = []
    ok = True
    try:
        if args.stage in (None, "download"):
            ok = _download(args, store, settings, lines)
        if args.stage in (None, "embed"):
            _embed(args, store, settings, lines)
        counts = store.counts(settings.model or _active_slug(settings))
        lines.append(f"store: {counts.images} images, {counts.embedded} embedded, {counts.pending} pending, "
                     f"{counts.failed_urls} failed URLs {counts.failed_by_reason or ''}".rstrip())
    except (EncoderUnavailable, StoreUnavailable, ImagesFolderFull) as exc:  # a message to act on, not a traceback
        print("\n".join(lines + [f"error: {exc.strerror if isinstance(exc, OSError) else exc}"]), file=sys.stderr)
        return 1
    finally:
        store.close()
    print("\n".join(lines))
    return 0 if ok else 1


def _active_slug(settings) -> str:
    from imagesearch.model_card import load_card

    try:
        return load_card(settings.model_repository, settings.model).slug
    except FileNotFoundError:
        return ""
