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
    cards = [load_card(settings.model_repository, slug) for slug in settings.model_slugs]
    store = make_store(settings)
    try:
        counts = [store.counts(card.slug) for card in cards]
        health = store.health()
    finally:
        store.close()
    encoder_health = []
    for card in cards:
        try:  # loading the encoder runs its reference check: a file that misbehaves here says so
            encoder = make_encoder(settings.for_model(card.slug), card)
            encoder_health.append(encoder.health())
            encoder.close()
        except Exception as exc:
            encoder_health.append({"ok": False, "error": str(exc)})
    where = health.get("path") or health.get("url")  # without credentials
    models = [{"model": card.slug, "family": card.family, "architecture": card.architecture, "pretrained": card.pretrained,
               "counts": n.model_dump(), "encoder_health": h} for card, n, h in zip(cards, counts, encoder_health, strict=True)]
    # the top level describes the default (first) model, as before several models could be served
    status = {**models[0], "encoder": settings.encoder, "store": settings.store, "store_location": where,
              "store_ok": health.get("ok", False), "models": models}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for card, n, h in zip(cards, counts, encoder_health, strict=True):
        vectors = (
            f"dim {card.dim}" if card.vectors_per_image == 1 else f"{card.vectors_per_image} x {card.dim}-d vectors per image"
        )
        print(f"model:   {card.slug} ({card.architecture}, {card.pretrained}, {vectors}) via {settings.encoder}")
        print(f"encoder: {_describe_encoder(settings.model_variant, h)}")
        print(f"images:  {n.images}  embedded: {n.embedded}  pending: {n.pending}  embed failures: {n.embed_failed}")
    print(f"store:   {settings.store} at {where} ({'ok' if status['store_ok'] else 'DOWN: ' + str(health.get('error'))})")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts[0].failed_by_reason.items())) or "none"
    print(f"failed URLs: {counts[0].failed_urls} ({reasons})")
    return 0


def _describe_encoder(variant: str, health: dict) -> str:
    if not health.get("ok"):
        return f"DOWN: {health.get('error')}"
    check = health.get("reference_check") or {}
    variant = check.get("variant", variant)  # what the encoder loaded (Triton: the server's config)
    if "precision" in health:  # OpenVINO: the arithmetic it settled on for this CPU
        variant = f"{variant} computed in {health['precision']}"
    if not check.get("checked"):
        return f"ok ({variant}; {check.get('detail', 'no reference check')})"
    figures = ", ".join(f"{tower} {value:.5f}" for tower, value in check["worst_cosine"].items())
    verdict = "passes" if check["ok"] else "FAILS (served anyway: IMAGESEARCH_REFERENCE_CHECK=warn)"
    return f"ok ({variant}; reference check {verdict}: worst cosine {figures}, gate {check['minimum']})"
