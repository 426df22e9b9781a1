"""`imagesearch status`: counts, model and store."""

from __future__ import annotations

import argparse
import json

from imagesearch.config import get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from imagesearch.model_card import load_card
    from imagesearch.stores import make_store

    settings = get_settings()
    card = load_card(settings.model_repository, settings.model)
    store = make_store(settings)
    try:
        counts = store.counts(card.slug)
        health = store.health()
    finally:
        store.close()
    where = str(settings.data_dir / "store.sqlite3") if settings.store == "local" else settings.es_url
    status = {"model": card.slug, "architecture": card.architecture, "pretrained": card.pretrained,
              "encoder": settings.encoder, "store": settings.store, "store_location": where,
              "store_ok": health.get("ok", False), "counts": counts.model_dump()}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"model:   {card.slug} ({card.architecture}, {card.pretrained}, dim {card.dim}) via {settings.encoder}")
    print(f"store:   {settings.store} at {where} ({'ok' if status['store_ok'] else 'DOWN: ' + str(health.get('error'))})")
    print(f"images:  {counts.images}  embedded: {counts.embedded}  pending: {counts.pending}  embed failures: {counts.embed_failed}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts.failed_by_reason.items())) or "none"
    print(f"failed URLs: {counts.failed_urls} ({reasons})")
    return 0
