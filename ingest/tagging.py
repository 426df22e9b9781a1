"""Tagging at ingest (imagesearch/tags): the default model's embed worker tags each batch it embeds
from the vectors in hand, and the images embedded before (before tagging was on, or tagged with
another vocabulary, template or setting) are tagged from their stored vectors: no image is decoded
or embedded again for it."""

from __future__ import annotations

import numpy as np

from imagesearch.config import Settings
from imagesearch.model_card import load_card
from imagesearch.stores import VectorStore
from imagesearch.tags import Tagger, make_tagger, tagging_model

BACKLOG_BATCH = 256  # stored vectors read and tagged per store round trip


def tagger_for(settings: Settings, models: list[str]) -> Tagger | None:
    """The tagger of this ingest: None when tagging is off, or when ``models`` (the slugs it embeds
    with) leave out the tagging model (the default one)."""
    if not settings.tagging:
        return None
    card = load_card(settings.model_repository, tagging_model(settings))
    if card.slug not in {load_card(settings.model_repository, slug).slug for slug in models}:
        return None
    return make_tagger(settings, card)


def tag_backlog(store: VectorStore, tagger: Tagger) -> int:
    """Tag the embedded images whose tags are missing or came from another tagging, from their stored
    vectors; returns how many."""
    done, after = 0, ""
    while batch := store.untagged(tagger.model, tagger.key, BACKLOG_BATCH, after):
        ids = [image_id for image_id, _ in batch]
        tagger.write(store, ids, np.stack([vector for _, vector in batch]))
        done, after = done + len(ids), ids[-1]
    return done


def describe(tagger: Tagger, at_embed: int, backlog: int) -> str:
    """The summary line of an ingest's tagging."""
    return (f"tags ({tagger.model}, {len(tagger.vocabulary)} labels): {at_embed} images tagged as embedded, "
            f"{backlog} from stored vectors")
