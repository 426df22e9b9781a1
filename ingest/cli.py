"""`imagesearch ingest`: download (URL list, folder) and embed; by default both at once (see
``imagesearch.ingest.pipeline``). `imagesearch ingest download ...` and `imagesearch ingest embed`
run the stages separately, also at the same time in two processes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from imagesearch.config import get_settings

if TYPE_CHECKING:
    from imagesearch.ingest.pipeline import Ingest


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
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run as a Ray Data pipeline on the Ray cluster at ADDRESS (host:port of its head, or "
                             "'local' for a Ray instance of this machine): a URL list (--urls: text, TSV, or Parquet/CSV "
                             "with url and caption columns), or the embed stage; needs the ray extra")


def run(args: argparse.Namespace) -> int:
    from imagesearch.blobs import BlobStorageError
    from imagesearch.encoders import EncoderUnavailable
    from imagesearch.ingest.pipeline import Ingest, IngestPlan
    from imagesearch.stores import StoreUnavailable, make_store
    from imagesearch.tags import VocabularyError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for chatty in ("elastic_transport", "aiohttp"):  # a line per request drowns the progress; their warnings stay
        logging.getLogger(chatty).setLevel(logging.WARNING)
    plan = IngestPlan(urls=args.urls, folders=args.folder, retry_failed=args.retry_failed, retry_removed=args.retry_removed,
                      models=args.model, follow=args.follow, idle_exit_s=args.idle_exit)
    if args.stage != "embed" and not plan.has_sources:
        print("nothing to ingest: give --urls FILE, --folder DIR or --retry-failed", file=sys.stderr)
        return 2
    if args.ray and (args.folder or args.retry_failed or args.follow):
        print("--ray runs a URL list (--urls) or the embed stage; --folder, --retry-failed and --follow run on one "
              "machine", file=sys.stderr)
        return 2
    settings = get_settings()
    store = make_store(settings)
    ingest = Ingest(settings, store, plan, say=lambda message: print(message, file=sys.stderr))
    if args.follow:  # `docker compose stop` (SIGTERM) or Ctrl-C: finish the batches in flight, then exit 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: ingest.stop())
    ok = True
    try:
        if args.ray:
            ok = _on_ray(ingest, args.ray, args.stage)
            if ok and args.stage != "download":
                store.refresh()
        elif args.stage == "download":
            ok = ingest.download()
        else:
            if args.stage == "embed":
                ingest.embed()
            else:
                ok = ingest.download_and_embed()
            if not args.follow:  # searchable at once (Elasticsearch), the local store's index saved for the API
                store.refresh()
        ingest.report_counts()
    # a message to act on, not a traceback
    except (EncoderUnavailable, StoreUnavailable, BlobStorageError, VocabularyError) as exc:
        print("\n".join(ingest.lines + [f"error: {exc.strerror if isinstance(exc, OSError) else exc}"]), file=sys.stderr)
        return 1
    finally:
        store.close()
    print("\n".join(ingest.lines))
    return 0 if ok else 1


def _on_ray(ingest: Ingest, address: str, stage: str | None) -> bool:
    try:
        from imagesearch.ingest.ray_pipeline import ingest_on_ray
    except ImportError as exc:  # the one-machine install has no Ray
        ingest.say(f"error: --ray needs Ray ({exc}): pip install 'imagesearch[ray]'")
        return False
    return ingest_on_ray(ingest, address, stage)
