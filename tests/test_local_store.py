"""The local store (the default, SQLite + exact search): filters are applied before the top k is taken."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from imagesearch.records import ImageRecord, SearchFilters
from imagesearch.stores.local import LocalStore

MODEL, DIM = "test-model", 16


def image_id(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


def toward(query: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine with the unit vector ``query`` is exactly ``cosine``."""
    other = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    other -= (other @ query) * query
    other /= np.linalg.norm(other)
    return (cosine * query + np.sqrt(1 - cosine**2) * other).astype(np.float32)


@pytest.fixture()
def crowded(tmp_path):
    """20 JPEG folder images of 1000x1000 very close to the query (cosine 0.99..0.95) and 3 PNG URL
    images of 200x200 far from it (cosine 0.5, 0.4, 0.3): the 3 are never in the unfiltered top 20."""
    store = LocalStore(tmp_path / "store.sqlite3")
    store.ensure_model(MODEL, DIM)
    query = np.zeros(DIM, np.float32)
    query[0] = 1.0
    close = [(i, "jpeg", 1000, "folder", 0.99 - 0.002 * i) for i in range(20)]
    far = [(100 + i, "png", 200, "url", cosine) for i, cosine in enumerate((0.5, 0.4, 0.3))]
    rows = close + far
    store.upsert_images([ImageRecord(id=image_id(i), width=side, height=side, format=fmt, bytes=1000, sources=[source])
                         for i, fmt, side, source, _ in rows])
    store.set_vectors(MODEL, [image_id(i) for i, *_ in rows],
                      np.stack([toward(query, cosine, seed=i) for i, *_, cosine in rows]))
    yield store, query, [image_id(i) for i, *_ in far]
    store.close()


@pytest.mark.parametrize("filters", [SearchFilters(format=["png"]), SearchFilters(source=["url"]),
                                     SearchFilters(max_width=500), SearchFilters(format=["png"], max_height=200)],
                         ids=["format", "source", "max_width", "format+max_height"])
def test_filters_apply_before_the_top_k(crowded, filters):
    """k=2 with a filter that only the 3 far images pass: filtering after the top k would return none
    of them; filtering before returns exactly the best 2 of the 3, best first, with their scores."""
    store, query, far = crowded
    assert [h.id for h in store.search(MODEL, query, 2)] == [image_id(0), image_id(1)]  # unfiltered: close ones
    hits = store.search(MODEL, query, 2, filters)
    assert [h.id for h in hits] == far[:2]
    np.testing.assert_allclose([h.score for h in hits], [0.5, 0.4], atol=1e-5)
    assert all(filters.matches(h.record) for h in hits)


def test_filter_with_k_over_the_matches_returns_every_match_and_nothing_else(crowded):
    store, query, far = crowded
    assert [h.id for h in store.search(MODEL, query, 10, SearchFilters(format=["png"]))] == far


def test_filters_and_min_score_together(crowded):
    """min_score cuts inside the filtered results, not inside the unfiltered top k."""
    store, query, far = crowded
    assert [h.id for h in store.search(MODEL, query, 3, SearchFilters(format=["png"]), min_score=0.35)] == far[:2]
