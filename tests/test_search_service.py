"""Hybrid search through ``SearchService`` on the local store, against an oracle outside it: the two
rankings asked of the store directly (``search`` with the encoder's text vector, ``keyword_search``)
and reciprocal rank fusion (k = 60) recomputed here; and the candidate depth the service asks for."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import MAX_K, ImageRecord, SearchFilters
from imagesearch.search import SearchService
from imagesearch.stores.local import LocalStore
from tests.support import shapes

MODEL = "shapes-tiny"
EXTRA_WORDS = ["harbour", "at dusk", "circle of friends", "red letter day", "blue moon", "square meal"]


class RecordingStore(LocalStore):
    """The real local store, remembering the k of every ``search`` and ``keyword_search``."""

    def __init__(self, path):
        super().__init__(path)
        self.asked: list[tuple[str, int]] = []

    def search(self, model, vector, k, filters=None, min_score=None):
        self.asked.append(("search", k))
        return super().search(model, vector, k, filters, min_score)

    def keyword_search(self, text, k, filters=None):
        self.asked.append(("keyword_search", k))
        return super().keyword_search(text, k, filters)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, test_model_repo):
    """72 shape images embedded with the test model; captions that often tell the truth, sometimes
    name another shape, and sometimes add unrelated words: so the two rankings differ."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("hybrid") / "var", model_repository=test_model_repo, model=MODEL)
    encoder = make_encoder(settings)
    rng = random.Random(8)
    items = shapes.dataset(n_per_class=6, seed=81)
    records, pixels = [], []
    for n, item in enumerate(items):
        data = item.encode("PNG" if n % 3 == 0 else "JPEG")
        colour, shape = item.colour, item.shape
        if rng.random() < 0.3:  # a caption that names another class
            colour, shape = rng.choice(shapes.CLASSES)
        caption = shapes.caption(colour, shape) + (f" {rng.choice(EXTRA_WORDS)}" if rng.random() < 0.4 else "")
        records.append(ImageRecord(id=hashlib.sha256(data).hexdigest(), captions=[caption], sources=["url"],
                                   urls=[f"https://example.com/{n}.jpg"], width=96, height=96,
                                   format="png" if n % 3 == 0 else "jpeg", bytes=len(data)))
        pixels.append(prepare(data, encoder.card))
    store = RecordingStore(settings.data_dir / "store.sqlite3")
    store.upsert_images(records)
    store.set_vectors(MODEL, [r.id for r in records], encoder.encode_images(np.stack(pixels)))
    service = SearchService(settings, encoder=encoder, store=store)
    yield service, store, encoder
    service.close()


def rrf_oracle(vector_ids: list[str], text_ids: list[str]) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Reciprocal rank fusion as Cormack et al. define it, with k = 60: each list's rank r adds 1 / (60 + r)."""
    fused: dict[str, float] = {}
    parts: dict[str, list[str]] = {}
    for part, ids in (("vector", vector_ids), ("text", text_ids)):
        for rank, image_id in enumerate(ids, start=1):
            fused[image_id] = fused.get(image_id, 0.0) + 1.0 / (60 + rank)
            parts.setdefault(image_id, []).append(part)
    return fused, parts


@pytest.mark.parametrize("text, k, filters", [
    ("a red circle", 5, None), ("a blue square", 12, None), ("harbour", 8, None),
    ("a yellow triangle at dusk", 20, SearchFilters(format=["jpeg"])), ("a green circle", 72, None),
])
def test_hybrid_scores_are_reciprocal_rank_fusion_of_the_two_rankings(indexed, text, k, filters):
    service, store, encoder = indexed
    answer = service.search_text(text, k, filters, mode="hybrid")
    depth = min(max(4 * k, 50), MAX_K)
    vector_ids = [h.id for h in store.search(MODEL, encoder.encode_texts([text])[0], depth, filters)]
    text_ids = [h.id for h in store.keyword_search(text, depth, filters)]
    assert vector_ids and text_ids, "the oracle needs both rankings"
    fused, parts = rrf_oracle(vector_ids, text_ids)

    results = answer.results
    assert len(results) == min(k, len(fused))
    for result in results:
        assert result.score == pytest.approx(fused[result.id], abs=5e-7), result.id  # results carry 6 decimals
        assert sorted(result.matched) == sorted(parts[result.id])
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    left_out = [score for image_id, score in fused.items() if image_id not in {r.id for r in results}]
    assert all(score <= scores[-1] + 5e-7 for score in left_out)  # nothing better was dropped
    assert any(len(parts[r.id]) == 2 for r in results)  # the test shows fusion: some results are in both lists


@pytest.mark.parametrize("k, depth", [(1, 50), (5, 50), (12, 50), (13, 52), (40, 160), (100, 400)])
def test_hybrid_asks_each_part_for_max_4k_50_candidates(indexed, k, depth):
    service, store, _ = indexed
    store.asked.clear()
    service.search_text("a red circle", k, mode="hybrid")
    assert sorted(store.asked) == [("keyword_search", depth), ("search", depth)]
    store.asked.clear()
    service.search_text("a red circle", k, mode="text")  # one part alone: asked for k, and one more (a next page?)
    assert store.asked == [("keyword_search", k + 1)]
