"""`imagesearch status`: counts, model and store."""

from __future__ import annotations

import argparse
import json

from imagesearch.config import get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from imagesearch.encoders import make_encoder
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
    try:  # loading the encoder runs its reference check: a file that misbehaves here says so
        encoder = make_encoder(settings, card)
        encoder_health = encoder.health()
        encoder.close()
    except Exception as exc:
        encoder_health = {"ok": False, "error": str(exc)}
    where = health.get("path") or health.get("url")  # without credentials
    status = {"model": card.slug, "architecture": card.architecture, "pretrained": card.pretrained,
              "encoder": settings.encoder, "store": settings.store, "store_location": where,
              "store_ok": health.get("ok", False), "counts": counts.model_dump(), "encoder_health": encoder_health}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"model:   {card.slug} ({card.architecture}, {card.pretrained}, dim {card.dim}) via {settings.encoder}")
    print(f"encoder: {_describe_encoder(settings.model_variant, encoder_health)}")
    print(f"store:   {settings.store} at {where} ({'ok' if status['store_ok'] else 'DOWN: ' + str(health.get('error'))})")
    print(f"images:  {counts.images}  embedded: {counts.embedded}  pending: {counts.pending}  embed failures: {counts.embed_failed}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts.failed_by_reason.items())) or "none"
    print(f"failed URLs: {counts.failed_urls} ({reasons})")
    return 0


def _describe_encoder(variant: str, health: dict) -> str:
    if not health.get("ok"):
        return f"DOWN: {health.get('error')}"
    check = health.get("reference_check") or {}
    if not check.get("checked"):
        return f"ok ({variant}; {check.get('detail', 'no reference check')})"
    figures = ", ".join(f"{tower} {value:.5f}" for tower, value in check["worst_cosine"].items())
    verdict = "passes" if check["ok"] else "FAILS (served anyway: IMAGESEARCH_REFERENCE_CHECK=warn)"
    return f"ok ({check['variant']}; reference check {verdict}: worst cosine {figures}, gate {check['minimum']})"
