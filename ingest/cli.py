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
    parser.add_argument("--model", action="append", default=[], metavar="SLUG",
                        help="embed with this model only (repeatable; default: every model of IMAGESEARCH_MODELS)")


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
    from ingest.embed import EmbedWorker, embed_all
    from ingest.progress import Progress

    workers, progresses = [], []
    try:
        for slug in args.model or settings.model_slugs:  # each image is embedded with every model
            encoder = make_encoder(settings.for_model(slug))
            progress = Progress(f"embed ({encoder.card.slug})", total=store.counts(encoder.card.slug).pending)
            workers.append(EmbedWorker(store, encoder, settings, progress))
            progresses.append(progress)
        if args.follow:  # `docker compose stop` (SIGTERM) or Ctrl-C: finish the batches in flight, then exit 0
            def stop(*_) -> None:
                for worker in workers:
                    worker.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, stop)
        summaries = embed_all(workers, follow=args.follow, idle_exit_s=args.idle_exit)
        for progress in progresses:
            progress.close()
    finally:
        for worker in workers:
            worker.encoder.close()
    for slug, summary in summaries.items():
        failed = ", ".join(f"{k} {v}" for k, v in summary.failed.items()) or "none"
        name = "" if len(summaries) == 1 else f" {slug}"
        lines.append(f"embed{name}: {summary.embedded} embedded in {summary.seconds:.1f}s ({summary.rate:.1f} img/s), "
                     f"failed: {failed}")


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


def _active_slug(settings) -> str:
    from imagesearch.model_card import load_card

    try:
        return load_card(settings.model_repository, settings.model).slug
    except FileNotFoundError:
        return ""
