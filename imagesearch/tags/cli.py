"""`imagesearch tags`: the tags of the indexed images, the most held first, with how many hold each."""

from __future__ import annotations

import argparse
import sys

from imagesearch.config import get_settings
from imagesearch.records import MAX_K


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=int, default=100, metavar="N", help=f"show the N most held tags (default 100, at most {MAX_K})"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON of GET /tags")


def run(args: argparse.Namespace) -> int:
    from imagesearch.stores import StoreUnavailable, make_store
    from imagesearch.tags.counts import tag_counts

    if not 1 <= args.limit <= MAX_K:
        print(f"error: --limit must be between 1 and {MAX_K}, got {args.limit}", file=sys.stderr)
        return 2
    settings = get_settings()
    try:
        store = make_store(settings)
        try:
            counts = tag_counts(store, args.limit)
        finally:
            store.close()
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(counts.model_dump_json(indent=2))
        return 0
    if not counts.tags:
        print("no tags yet (tagging is " + ("on: `imagesearch ingest` tags the embedded images)" if settings.tagging
                                             else "off: IMAGESEARCH_TAGGING=false)"))
    for item in counts.tags:
        print(f"{item.count:8d}  {item.tag}")
    return 0
