"""Near-duplicates in every store (the local store exact and through its graph index, and a real
Elasticsearch node: the store contract's ``store`` fixture), against oracles outside the product:
the pairs numpy finds by brute force over the stored vectors, groups found by a plain breadth-first
search over them, and collapsed rankings made by a plain greedy loop over numpy's order.

Collections here hold fewer images than the graph index's least candidates (64), so its answers are
exact too; what its recall is on a large collection is bench/bench_duplicates.py's to measure."""

from __future__ import annotations

import random
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

from imagesearch.config import Settings
from imagesearch.records import SearchFilters
from imagesearch.search import QueryError, SearchService
from imagesearch.search.duplicates import group_pairs
from imagesearch.stores import StoreUnavailable, make_store, query_vector
from tests.support.photos import CAMERA_QUERIES
from tests.support.store_data import image_id, record, toward, unit_vectors
from tests.test_store_contract import DIM, MODEL, filled, photo_records, settings_for

THRESHOLD = 0.95
GROUPS = [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9, 10]]  # rows planted near the first of their group


@pytest.fixture(params=["local", "local-hnsw", "elasticsearch"])
def store(request, tmp_path):
    """The store contract's three stores."""
    store = make_store(settings_for(request.param, request, tmp_path))
    yield store
    store.close()


def planted(n: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors (random 16-d vectors are far apart), the GROUPS' members made near
    the first of theirs: at a cosine of 0.965 to 0.995 with it."""
    vectors = unit_vectors(n, DIM, seed=seed)
    rng = np.random.default_rng(seed)
    for group in GROUPS:
        for member in group[1:]:
            vectors[member] = toward(vectors[group[0]], float(rng.uniform(0.965, 0.995)), seed=seed * 100 + member)
    return vectors


def oracle_pairs(ids: list[str], vectors: np.ndarray, threshold: float) -> dict[tuple[str, str], float]:
    """Every pair at or above the threshold, by brute force over the vectors."""
    scores = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    return {tuple(sorted((ids[i], ids[j]))): float(scores[i, j])  # type: ignore[misc]
            for i in range(len(ids)) for j in range(i + 1, len(ids)) if scores[i, j] >= threshold}


def oracle_groups(pairs: dict[tuple[str, str], float]) -> list[tuple[list[str], float]]:
    """Connected components by breadth-first search: (sorted ids, lowest pair score), the largest
    first, then the closest, then by first id."""
    neighbours = defaultdict(set)
    for a, b in pairs:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen, groups = set(), []
    for start in sorted(neighbours):
        if start in seen:
            continue
        component, queue = {start}, [start]
        while queue:
            for other in neighbours[queue.pop()] - component:
                component.add(other)
                queue.append(other)
        seen |= component
        groups.append((sorted(component), min(score for pair, score in pairs.items() if pair[0] in component)))
    return sorted(groups, key=lambda g: (-len(g[0]), -g[1], g[0][0]))


def service_over(store, tmp_path, **settings) -> SearchService:
    encoder = SimpleNamespace(card=SimpleNamespace(slug=MODEL), close=lambda: None)  # vectors are given: no encoder runs
    return SearchService(Settings(data_dir=tmp_path / "var", max_k=50, **settings), encoder=encoder, store=store)


# --- the store's near pairs ---------------------------------------------------------------------------


def test_near_pairs_are_every_pair_numpy_finds_at_or_above_the_threshold(store):
    n = 60
    vectors = planted(n, seed=1)
    records = [record(i) for i in range(n)]
    filled(store, records, vectors)
    ids = [r.id for r in records]
    for threshold in (THRESHOLD, 0.98):
        expected = oracle_pairs(ids, vectors, threshold)
        found = store.near_pairs(MODEL, threshold, 16)
        assert [(a, b) for a, b, _ in found] == sorted(expected), threshold
        assert all(score == pytest.approx(expected[(a, b)], abs=1e-5) for a, b, score in found)
    assert len(oracle_pairs(ids, vectors, THRESHOLD)) >= 8  # the planted groups are there

    # a removed image leaves its pairs; its group's others keep theirs
    store.remove_images([image_id(2)])
    store.refresh()
    left = [i for i in range(n) if i != 2]
    expected = oracle_pairs([ids[i] for i in left], vectors[left], THRESHOLD)
    assert [(a, b) for a, b, _ in store.near_pairs(MODEL, THRESHOLD, 16)] == sorted(expected)
    with pytest.raises(StoreUnavailable):
        store.near_pairs("a-model-never-set-up", THRESHOLD, 16)


def test_near_pairs_of_images_with_several_vectors_compare_their_query_vectors(store):
    """BLIP-2 keeps several vectors per image: near-duplicates compare their normalized means, so that
    an image is its own near-duplicate (its vectors against their mean would not be)."""
    n = 20
    base = planted(n, seed=2)
    several = np.stack([base, unit_vectors(n, DIM, seed=3)], axis=1)
    root = {member: group[0] for group in GROUPS for member in group}
    # each image's second vector near its first, the same way for a planted group's members
    several[:, 1] = [toward(v, 0.9, seed=root.get(i, i)) for i, v in enumerate(base)]
    records = [record(i) for i in range(n)]
    store.upsert_images(records)
    store.set_vectors("several", [r.id for r in records], several)
    store.refresh()
    means = np.stack([query_vector(v) for v in several])
    expected = oracle_pairs([r.id for r in records], means, THRESHOLD)
    assert expected
    found = store.near_pairs("several", THRESHOLD, 16)
    assert [(a, b) for a, b, _ in found] == sorted(expected)


def test_get_vectors_gives_what_get_vector_gives_for_many_ids(store):
    vectors = unit_vectors(5, DIM, seed=4)
    filled(store, [record(i) for i in range(5)], vectors)
    found = store.get_vectors(MODEL, [image_id(3), image_id(0), "f" * 64, image_id(3)])
    assert sorted(found) == sorted([image_id(0), image_id(3)])
    np.testing.assert_array_equal(found[image_id(3)], vectors[3])
    assert store.get_vectors(MODEL, []) == {} and store.get_vectors("another-model", [image_id(1)]) == {}


# --- groups ---------------------------------------------------------------------------------------------


def test_union_find_groups_are_the_connected_components_a_plain_search_finds():
    rng = random.Random(5)
    ids = [f"{i:03d}" for i in range(300)]
    for round_ in range(20):
        pairs = {}
        for _ in range(rng.randint(0, 400)):
            a, b = rng.sample(ids, 2)
            pairs[tuple(sorted((a, b)))] = round(rng.uniform(0.95, 1.0), 4)
        found = group_pairs([(a, b, score) for (a, b), score in rng.sample(sorted(pairs.items()), len(pairs))])
        assert [(g.ids, g.min_score) for g in found] == oracle_groups(pairs), round_
    assert group_pairs([]) == []


def test_the_service_groups_the_stores_pairs(store, tmp_path):
    n = 60
    vectors = planted(n, seed=6)
    records = [record(i) for i in range(n)]
    filled(store, records, vectors)
    service = service_over(store, tmp_path)
    for threshold in (None, 0.98):  # None: IMAGESEARCH_DUPLICATE_THRESHOLD
        answer = service.duplicates(threshold)
        expected = oracle_groups(oracle_pairs([r.id for r in records], vectors, threshold or THRESHOLD))
        assert [(g.ids, g.min_score) for g in answer.groups] == [(ids, pytest.approx(s, abs=1e-5)) for ids, s in expected]
        assert answer.threshold == (threshold or THRESHOLD) and answer.model == MODEL
    assert sorted(sorted(image_id(i) for i in group) for group in GROUPS) == sorted(g.ids for g in service.duplicates().groups)
    with pytest.raises(QueryError, match="threshold must be between 0.5 and 1.0"):
        service.duplicates(0.2)


# --- collapse -------------------------------------------------------------------------------------------


def collapsed_oracle(order: list[int], vectors: np.ndarray, threshold: float) -> list[int]:
    kept: list[int] = []
    for i in order:
        if all(float(vectors[i] @ vectors[j]) < threshold for j in kept):
            kept.append(i)
    return kept


def pages(service: SearchService, query: np.ndarray, k: int, **options) -> list[str]:
    ids, offset = [], 0
    while offset is not None:
        page = service.search_vector(query, {}, k, offset=offset, collapse=True, **options)
        assert len(page.results) == k or page.next_offset is None
        ids += [r.id for r in page.results]
        offset = page.next_offset
    return ids


@pytest.mark.parametrize("sort", ["relevance", "newest"])
def test_collapse_keeps_the_best_of_each_group_and_fills_pages_from_deeper_results(store, tmp_path, sort):
    n = 60
    records, made = photo_records(n, seed=7)
    vectors = planted(n, seed=8)
    filled(store, records, vectors)
    window = 30
    service = service_over(store, tmp_path, sort_window=window)
    query = toward(vectors[5], 0.8, seed=9)  # near the largest group: several of it would come first
    scores = vectors @ query
    apple = np.array([c in CAMERA_QUERIES["apple"] for c in made.cameras])
    for filters, keep in [(None, np.ones(n, bool)), (SearchFilters(camera="apple"), apple)]:
        relevance = collapsed_oracle([int(i) for i in np.argsort(-scores) if keep[i]], vectors, THRESHOLD)
        if sort == "relevance":
            expected = relevance
        else:  # the best `window` once collapsed, dated ones by date, then the undated
            dated = sorted((i for i in relevance[:window] if made.utc[i] is not None), key=lambda i: made.utc[i], reverse=True)
            expected = dated + [i for i in relevance[:window] if made.utc[i] is None]
        for k in (3, 7):
            assert pages(service, query, k, filters=filters, sort=sort) == [records[i].id for i in expected], (filters, k)
    plain = [r.id for r in service.search_vector(query, {}, 5).results]
    first = service.search_vector(query, {}, 5, collapse=True)
    assert len(set(plain) & {image_id(i) for i in GROUPS[2]}) >= 2  # without collapse the group fills the top
    assert len({r.id for r in first.results} & {image_id(i) for i in GROUPS[2]}) == 1 and len(first.results) == 5
    assert first.query == {"collapse": True}


def test_collapse_in_keyword_and_hybrid_search(store, tmp_path):
    """Every record's file name holds "jpg": mode text ranks them all; collapse leaves out the
    near-duplicates of better ones, as the oracle does over the keyword ranking."""
    n = 40
    vectors = planted(n, seed=10)
    filled(store, [record(i) for i in range(n)], vectors)
    service = service_over(store, tmp_path)
    ranking = [h.id for h in store.keyword_search("jpg", n)]
    rows = {image_id(i): i for i in range(n)}
    expected = [ranking[j] for j in collapsed_oracle(list(range(n)), vectors[[rows[i] for i in ranking]], THRESHOLD)]
    answer = service.search_text("jpg", 50, mode="text", collapse=True)
    assert [r.id for r in answer.results] == expected and len(expected) < n
