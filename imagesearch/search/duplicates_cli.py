"""`imagesearch duplicates [--threshold 0.95] [--json] [--model SLUG]`: the groups of near-duplicate
images, a thin shell over ``SearchService.duplicates``."""

from __future__ import annotations

import argparse
import sys

from imagesearch.config import get_settings
from imagesearch.search.query import QueryError, check_threshold


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=None, help="the cosine at or above which two images are "
                        "near-duplicates, 0.5 to 1 (default IMAGESEARCH_DUPLICATE_THRESHOLD)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer (GET /duplicates)")
    parser.add_argument("--model", default="", metavar="SLUG",
                        help="compare with this model's vectors (default: the first of IMAGESEARCH_MODELS, or IMAGESEARCH_MODEL)")


def run(args: argparse.Namespace) -> int:
    from imagesearch.search.cli import open_service
    from imagesearch.stores import StoreUnavailable

    settings = get_settings()
    settings = settings.for_model(args.model or settings.model_slugs[0])
    try:
        threshold = check_threshold(settings.duplicate_threshold if args.threshold is None else args.threshold)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (service := open_service(settings)) is None:
        return 1
    try:
        found = service.duplicates(threshold)
        records = {} if args.json else {i: service.store.get(i) for group in found.groups for i in group.ids}
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
    if args.json:
        print(found.model_dump_json(indent=2))
        return 0
    images = sum(len(group.ids) for group in found.groups)
    print(f"{len(found.groups)} group(s) of near-duplicates, {images} images ({found.model}, threshold {threshold:g}, "
          f"{found.took_ms / 1000:.1f} s)")
    for number, group in enumerate(found.groups, 1):
        print(f"\ngroup {number}: {len(group.ids)} images, min score {group.min_score:.4f}")
        for image_id in group.ids:
            record = records.get(image_id)
            print(f"  {image_id}  {record.url if record else ''}")
    return 0
