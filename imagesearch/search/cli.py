"""`imagesearch search "text"` / `--image PATH_OR_URL` / `--id ID`: thin shell over SearchService."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

from imagesearch.config import Settings, get_settings
from imagesearch.search.query import Mode, QueryError, check_mode, check_one_query


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="what to look for, e.g. 'a dog running on a beach'")
    parser.add_argument("--image", help="search by an example image: a file path or an http(s) URL")
    parser.add_argument("--id", dest="image_id", help="search by an image already in the index (more like this)")
    parser.add_argument("-k", type=int, default=10, help="number of results (default 10; at most IMAGESEARCH_MAX_K)")
    parser.add_argument("--mode", choices=get_args(Mode), default="vector",
                        help="for TEXT: match by meaning (vector, the default), by the words of captions and "
                             "file names (text), or both fused (hybrid)")
    parser.add_argument("--min-score", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the API's JSON response shape")
    parser.add_argument("--model", default="", metavar="SLUG",
                        help="search with this model (default: the first of IMAGESEARCH_MODELS, or IMAGESEARCH_MODEL)")


def _image_bytes(source: str, settings: Settings) -> bytes:
    if source.startswith(("http://", "https://")):
        from imagesearch.fetch import FetchOptions, fetch_image_sync

        return fetch_image_sync(source, FetchOptions.from_settings(settings)).data
    return Path(source).read_bytes()


def run(args: argparse.Namespace) -> int:
    from imagesearch.encoders import EncoderUnavailable
    from imagesearch.fetch import FetchError
    from imagesearch.preprocess import ImageDecodeError
    from imagesearch.search.service import SearchService
    from imagesearch.stores import StoreUnavailable

    try:
        check_one_query(TEXT=args.text, **{"--image": args.image, "--id": args.image_id})
        check_mode(args.mode, args.text is not None)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = get_settings()
    settings = settings.for_model(args.model or settings.model_slugs[0])
    try:
        service = SearchService(settings)
    except (FileNotFoundError, EncoderUnavailable, StoreUnavailable) as exc:  # no such model exported, or down
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.text is not None:
            response = service.search_text(args.text, args.k, min_score=args.min_score, mode=args.mode)
        elif args.image:
            response = service.search_image(_image_bytes(args.image, settings), args.k, min_score=args.min_score,
                                            query={"image": args.image})
        else:
            response = service.search_id(args.image_id, args.k, min_score=args.min_score)
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
    for rank, result in enumerate(response.results, 1):
        caption = f"  {result.captions[0]!r}" if result.captions else ""
        matched = f"  [{'+'.join(result.matched)}]" if args.mode != "vector" else ""
        print(f"{rank:3d}  {result.score:.4f}  {result.id[:12]}  {result.url}{caption}{matched}")
    return 0
