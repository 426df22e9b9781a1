"""Sort by date and pages, in the search service over every store (the local store exact and through
its graph index, and a real Elasticsearch node: the ``store`` fixture of the store contract): the
pages of a query, followed by their ``next_offset``, put together are the oracle's order (numpy
scores, dates compared in Python): no overlap, no gap, for each sort, with filters and min_score."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from imagesearch.config import Settings
from imagesearch.records import MAX_K, SearchFilters
from imagesearch.search import QueryError, SearchService
from imagesearch.stores import make_store
from tests.support.photos import CAMERA_QUERIES
from tests.support.store_data import unit_vectors
from tests.test_store_contract import DIM, MODEL, filled, photo_records, settings_for

WINDOW = 30  # IMAGESEARCH_SORT_WINDOW: small, so that the date sorts meet its end


@pytest.fixture(params=["local", "local-hnsw", "elasticsearch"])
def store(request, tmp_path):
    """The store contract's three stores."""
    store = make_store(settings_for(request.param, request, tmp_path))
    yield store
    store.close()


def service_over(store, tmp_path) -> SearchService:
    encoder = SimpleNamespace(card=SimpleNamespace(slug=MODEL), close=lambda: None)  # vectors are given: no encoder runs
    return SearchService(Settings(data_dir=tmp_path / "var", sort_window=WINDOW, max_k=50), encoder=encoder, store=store)


def all_pages(service: SearchService, query: np.ndarray, k: int, sort: str, filters, min_score) -> list[str]:
    ids: list[str] = []
    offset = 0
    while True:
        page = service.search_vector(query, {"vector": "test"}, k, filters, min_score, sort=sort, offset=offset)
        assert len(page.results) <= k and (page.next_offset is None or len(page.results) == k)
        ids += [r.id for r in page.results]
        if page.next_offset is None:
            return ids
        assert page.next_offset == offset + k
        offset = page.next_offset


@pytest.mark.parametrize("sort", ["relevance", "newest", "oldest"])
def test_pages_follow_each_other_in_the_oracle_order(store, tmp_path, sort):
    # Fewer images than the graph index's least candidates (64): its searches see them all, so the
    # exact oracle holds for it too (how approximate search affects deep pages: docs/api.md).
    n = 60
    records, made = photo_records(n, seed=51)
    vectors = unit_vectors(n, DIM, seed=52)
    filled(store, records, vectors)
    service = service_over(store, tmp_path)
    query = unit_vectors(1, DIM, seed=53)[0]
    scores = vectors @ query
    apple = np.array([c in CAMERA_QUERIES["apple"] for c in made.cameras])
    cutoff = float(np.sort(scores)[::-1][40])
    for filters, min_score, keep in [(None, None, np.ones(n, bool)), (SearchFilters(camera="apple"), None, apple),
                                     (None, cutoff, scores >= cutoff)]:
        relevance = [i for i in np.argsort(-scores) if keep[i]]
        if sort == "relevance":
            expected = relevance
        else:  # the best WINDOW by relevance, dated ones by date (equal dates: by relevance), then the undated
            window = relevance[:WINDOW]
            dated = sorted((i for i in window if made.utc[i] is not None), key=lambda i: made.utc[i], reverse=sort == "newest")
            expected = dated + [i for i in window if made.utc[i] is None]
            assert any(made.utc[i] is None for i in window)  # the test shows where the undated go
        for k in (7, 10):
            assert all_pages(service, query, k, sort, filters, min_score) == [records[i].id for i in expected], (filters, k)

    first = service.search_vector(query, {}, 5, sort=sort)
    for result in first.results:  # what the results say about each photo
        photo = records[[r.id for r in records].index(result.id)].photo
        assert (result.taken_at, result.camera, result.location) == (photo.taken_at, photo.camera, photo.location)
    assert first.query == ({} if sort == "relevance" else {"sort": sort})
    assert service.search_vector(query, {}, 5, sort=sort, offset=n + 5).results == []  # past the end: nothing


def test_a_page_beyond_the_stores_reach_or_before_the_start_is_a_query_error(store, tmp_path):
    filled(store, *photo_records(3, seed=54)[:1], unit_vectors(3, DIM, seed=55))
    service = service_over(store, tmp_path)
    query = unit_vectors(1, DIM, seed=56)[0]
    with pytest.raises(QueryError, match="offset must be 0 or more"):
        service.search_vector(query, {}, 5, offset=-1)
    with pytest.raises(QueryError, match=f"offset \\+ k must be at most {MAX_K}"):
        service.search_vector(query, {}, 10, offset=MAX_K - 9)
    last = service.search_vector(query, {}, 10, offset=MAX_K - 10)  # the last page the stores reach
    assert last.results == [] and last.next_offset is None


@pytest.mark.parametrize("sort", ["newest", "oldest"])
def test_keyword_matches_sorted_by_date_in_pages(store, tmp_path, sort):
    """mode=text goes through the same sort and pages: every record's file name holds "jpg", so the
    window (30 of 40) is the best 30 by BM25; its dated ones come by date, then the undated."""
    n = 40
    records, made = photo_records(n, seed=57)
    filled(store, records, unit_vectors(n, DIM, seed=58))
    service = service_over(store, tmp_path)
    window = [h.id for h in store.keyword_search("jpg", WINDOW)]
    utc = {r.id: made.utc[i] for i, r in enumerate(records)}
    dated = sorted((i for i in window if utc[i] is not None), key=lambda i: utc[i], reverse=sort == "newest")
    ids, offset = [], 0
    while offset is not None:
        page = service.search_text("jpg", 7, mode="text", sort=sort, offset=offset)
        assert all(r.matched == ["text"] for r in page.results)
        ids += [r.id for r in page.results]
        offset = page.next_offset
    assert ids == dated + [i for i in window if utc[i] is None]
