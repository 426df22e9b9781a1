"""`imagesearch search "text"` / `--image PATH_OR_URL` / `--id ID` / `--like ID`, steered by `--not TEXT`
and `--unlike ID`: thin shell over SearchService."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from imagesearch.config import Settings, get_settings
from imagesearch.records import SearchFilters
from imagesearch.search.query import (
    Examples,
    Mode,
    QueryError,
    Sort,
    check_mode,
    check_one_query,
    check_page,
    examples_from,
    filters_from,
)

if TYPE_CHECKING:
    from imagesearch.search.service import SearchService


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="what to look for, e.g. 'a dog running on a beach'")
    parser.add_argument("--image", help="search by an example image: a file path or an http(s) URL")
    parser.add_argument("--id", dest="image_id", help="search by an image already in the index (more like this)")
    steer = parser.add_argument_group("examples and negatives (vector mode; repeat each option for more)")
    steer.add_argument("--not", dest="negative", action="append", metavar="TEXT",
                       help="steer away from this, e.g. --not people (IMAGESEARCH_NEGATIVE_WEIGHT)")
    steer.add_argument("--like", dest="positive_ids", action="append", metavar="ID",
                       help="an indexed image the results should look like; without TEXT, --image or --id: more like these")
    steer.add_argument("--unlike", dest="negative_ids", action="append", metavar="ID",
                       help="an indexed image the results should not look like")
    parser.add_argument("-k", type=int, default=10, help="number of results (default 10; at most IMAGESEARCH_MAX_K)")
    parser.add_argument("--mode", choices=get_args(Mode), default="vector",
                        help="for TEXT: match by meaning (vector, the default), by the words of captions, "
                             "tags and file names (text), or both fused (hybrid)")
    parser.add_argument("--min-score", type=float, default=None)
    photos = parser.add_argument_group("photo filters (EXIF; an image without the field asked about does not match)")
    photos.add_argument("--taken-after", metavar="WHEN", help="taken at or after: an ISO 8601 date (from its start) or "
                        "datetime; without an offset: UTC")
    photos.add_argument("--taken-before", metavar="WHEN", help="taken before: an ISO 8601 date (up to its end) or datetime")
    photos.add_argument("--camera", help="taken with this camera: its make or model, or 'make model' (any letter case)")
    photos.add_argument("--near", metavar="LAT,LON", help="taken near this position, in decimal degrees (with --within-km)")
    photos.add_argument("--within-km", type=float, metavar="KM", help="great-circle distance from --near")
    parser.add_argument("--tag", action="append", dest="tags", metavar="TAG",
                        help="only images tagged TAG (repeatable: tagged with every one; `imagesearch tags` lists them)")
    parser.add_argument("--sort", choices=get_args(Sort), default="relevance",
                        help="relevance (the default); newest or oldest: the best IMAGESEARCH_SORT_WINDOW matches by "
                             "the date they were taken (undated ones last)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many results: the next page starts at the "
                        "offset the page before printed")
    parser.add_argument("--collapse", action="store_true", help="leave out near-duplicates of a better result "
                        "(IMAGESEARCH_DUPLICATE_THRESHOLD), deeper results filling the page")
    parser.add_argument("--json", action="store_true", help="print the API's JSON response shape")
    parser.add_argument("--model", default="", metavar="SLUG",
                        help="search with this model (default: the first of IMAGESEARCH_MODELS, or IMAGESEARCH_MODEL)")


def open_service(settings: Settings) -> SearchService | None:
    """The search service for the command line; None, said on stderr, when its model is not exported
    or its store or encoder does not answer."""
    from imagesearch.encoders import EncoderUnavailable
    from imagesearch.search.service import SearchService
    from imagesearch.stores import StoreUnavailable

    try:
        return SearchService(settings)
    except (FileNotFoundError, EncoderUnavailable, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _image_bytes(source: str, settings: Settings) -> bytes:
    if source.startswith(("http://", "https://")):
        from imagesearch.fetch import FetchOptions, fetch_image_sync

        return fetch_image_sync(source, FetchOptions.from_settings(settings)).data
    return Path(source).read_bytes()


def run(args: argparse.Namespace) -> int:
    from imagesearch.encoders import EncoderUnavailable
    from imagesearch.fetch import FetchError
    from imagesearch.preprocess import ImageDecodeError
    from imagesearch.stores import StoreUnavailable

    settings = get_settings()
    settings = settings.for_model(args.model or settings.model_slugs[0])
    try:
        check_one_query(args.positive_ids or (), "--like", TEXT=args.text, **{"--image": args.image, "--id": args.image_id})
        check_mode(args.mode, args.text is not None)
        filters = filters_from(taken_after=args.taken_after, taken_before=args.taken_before, camera=args.camera,
                               near=args.near, within_km=args.within_km, tags=args.tags)
        examples = examples_from(args.negative, args.positive_ids, args.negative_ids,
                                 max_each=settings.max_query_examples, mode=args.mode)
        check_page(args.k, args.offset, settings.max_k)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (service := open_service(settings)) is None:
        return 1
    try:
        response = _search(service, args, settings, filters, examples)
    except (QueryError, ImageDecodeError, FetchError, OSError, EncoderUnavailable, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
    if args.json:
        print(response.model_dump_json(indent=2))
        return 0
    if not response.results:
        print(f"no results ({response.model}; is anything embedded? see `imagesearch status`)")
    for rank, result in enumerate(response.results, args.offset + 1):
        caption = f"  {result.captions[0]!r}" if result.captions else ""
        matched = f"  [{'+'.join(result.matched)}]" if args.mode != "vector" else ""
        taken = f"  taken {result.taken_at.isoformat()}" if args.sort != "relevance" and result.taken_at else ""
        tags = f"  tags: {', '.join(result.tags)}" if result.tags else ""
        print(f"{rank:3d}  {result.score:.4f}  {result.id[:12]}  {result.url}{caption}{matched}{taken}{tags}")
    if response.next_offset is not None:
        print(f"more: --offset {response.next_offset}")
    return 0


def _search(service, args: argparse.Namespace, settings: Settings, filters: SearchFilters | None, examples: Examples):
    page = {"sort": args.sort, "offset": args.offset, "collapse": args.collapse}
    if args.text is not None:
        return service.search_text(args.text, args.k, filters, args.min_score, args.mode, examples=examples, **page)
    if args.image:
        return service.search_image(_image_bytes(args.image, settings), args.k, filters, args.min_score,
                                    {"image": args.image}, examples=examples, **page)
    if args.image_id:
        return service.search_id(args.image_id, args.k, filters, args.min_score, examples=examples, **page)
    return service.search_examples(examples, args.k, filters, args.min_score, **page)
