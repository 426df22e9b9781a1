"""`imagesearch index status|rebuild|swap|merge`: the Elasticsearch vector index lifecycle of a model.

Rebuild when a model's vectors need a new index (new weights under the same slug, other index
options): `rebuild` points the embed worker at a new index and queues every stored image again,
searches keep reading the current index; run `imagesearch ingest embed`, then `swap` moves searches
over atomically and deletes the old index. `merge` force-merges the search index into one segment
when a collection is done growing (a kNN search visits every segment in turn). The local store
needs none of this: it keeps one index per model and builds it itself.
"""

from __future__ import annotations

import argparse
import json
from typing import get_args

from imagesearch.config import EsIndexType, get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["status", "rebuild", "swap", "merge"])
    parser.add_argument("--model", default="", help="model slug (default: IMAGESEARCH_MODEL, or the only exported one)")
    parser.add_argument("--index-type", choices=get_args(EsIndexType),
                        help="rebuild: index type of the new index (default: IMAGESEARCH_ES_INDEX_TYPE)")
    parser.add_argument("--m", type=int, help="rebuild: HNSW graph degree (default: IMAGESEARCH_ES_HNSW_M)")
    parser.add_argument(
        "--ef-construction", type=int, help="rebuild: HNSW build candidates (default: IMAGESEARCH_ES_HNSW_EF_CONSTRUCTION)"
    )
    parser.add_argument("--force", action="store_true", help="swap even though images are still pending for the new index")


def run(args: argparse.Namespace) -> int:
    from imagesearch.model_card import load_card
    from imagesearch.stores import StoreUnavailable

    settings = get_settings()
    if settings.store != "elasticsearch":
        print(f"the local store has no index to {args.action}: it keeps one per model and builds it itself "
              "(IMAGESEARCH_STORE=local)")
        return 2
    from imagesearch.stores.elasticsearch import ElasticsearchStore

    card = load_card(settings.model_repository, args.model or settings.model)
    store = ElasticsearchStore(settings)
    try:
        if args.action == "rebuild":
            index = store.begin_rebuild(card.slug, card.dim, args.index_type, args.m, args.ef_construction,
                                          card.vectors_per_image)
            print(f"rebuilding {card.slug} into {index}: run `imagesearch ingest embed`, then `imagesearch index swap`")
        elif args.action == "swap":
            print(f"searches for {card.slug} now read {store.swap(card.slug, force=args.force)}")
        elif args.action == "merge":
            merged = store.merge(card.slug)
            print(f"merged {merged['index']}: {merged['segments_before']} segment(s) -> {merged['segments_after']} "
                  f"in {merged['seconds']} s")
        print(json.dumps(store.index_status(card.slug), indent=2))
        return 0
    except (ValueError, StoreUnavailable) as exc:
        print(f"index {args.action} failed: {exc}")
        return 2
    finally:
        store.close()
