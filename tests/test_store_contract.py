"""One contract, both stores: every test here runs on ``LocalStore`` (exact, and through its HNSW
index) and on ``ElasticsearchStore`` (a real node, tests/support/es_node.py). The behaviour is the one
the ``VectorStore`` docstrings in ``imagesearch/stores/base.py`` describe; where the stores differed,
they were made to agree."""

from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from imagesearch.config import Settings
from imagesearch.records import GeoPoint, ImageRecord, PhotoMetadata, SearchFilters, UrlFailure
from imagesearch.stores import MAX_K, StoreUnavailable, StoreWriteError, VectorStore, make_store
from imagesearch.stores.local import LocalStore, database
from tests.support.net import free_port
from tests.support.photos import CAMERA_QUERIES, CAMERAS, FIJI, PARIS, PhotoSet, distance_km, photo_set
from tests.support.store_data import image_id, record, toward, unit_vectors
from tests.test_local_store import HeldLock

MODEL, DIM = "contract-model", 16


def settings_for(kind: str, request, tmp_path, **overrides) -> Settings:
    if kind == "local":
        return Settings(data_dir=tmp_path / "var", store="local", **overrides)
    if kind == "local-hnsw":  # the local store through its graph index from the first vector on
        return Settings(data_dir=tmp_path / "var", store="local", local_index_min_vectors=0, **overrides)
    node = request.getfixturevalue("es_node")
    # float HNSW: on these few vectors its ranking is the exact one, which the tests compare against
    return Settings(data_dir=tmp_path / "var", store="elasticsearch", es_url=node.url, es_index_type="hnsw",
                    es_index_prefix=f"t{uuid.uuid4().hex[:10]}", **overrides)


@pytest.fixture(params=["local", "local-hnsw", "elasticsearch"])
def store(request, tmp_path):
    store = make_store(settings_for(request.param, request, tmp_path))
    assert isinstance(store, VectorStore)
    yield store
    store.close()


def filled(store: VectorStore, records: list[ImageRecord], vectors: np.ndarray) -> VectorStore:
    store.upsert_images(records)
    store.set_vectors(MODEL, [r.id for r in records], vectors)
    store.refresh()
    return store


# --- records and URL failures --------------------------------------------------------------------


def test_upserts_merge_urls_and_clear_failures(store):
    store.record_failures([UrlFailure(url="https://a.example/1.jpg", reason="timeout"),
                           UrlFailure(url="https://a.example/9.jpg", reason="http_status", detail="404")])
    store.record_failures([UrlFailure(url="https://a.example/9.jpg", reason="http_status", detail="410", attempts=2)])
    by_url = {f.url: f for f in store.failures()}
    assert (by_url["https://a.example/9.jpg"].attempts, by_url["https://a.example/9.jpg"].detail) == (3, "410")
    assert [f.url for f in store.failures()] == ["https://a.example/1.jpg", "https://a.example/9.jpg"]  # by URL

    first = record(1, urls=["https://a.example/1.jpg"])
    assert store.upsert_images([first, record(2), first]) == [True, True, False]
    assert store.upsert_images([record(1, urls=["https://b.example/1.jpg"], source="folder")]) == [False]
    assert store.upsert_images([]) == []
    merged = store.get(image_id(1))
    assert merged.urls == ["https://a.example/1.jpg", "https://b.example/1.jpg"] and merged.sources == ["url", "folder"]
    assert store.get("0" * 64) is None
    assert [f.url for f in store.failures()] == ["https://a.example/9.jpg"]  # 1.jpg now has an image
    assert store.known_urls(["https://b.example/1.jpg", "https://example.com/2.jpg", "https://a.example/9.jpg"]) == {
        "https://b.example/1.jpg", "https://example.com/2.jpg"}
    counts = store.counts(MODEL)
    assert (counts.images, counts.embedded, counts.pending, counts.failed_urls, counts.failed_by_reason) == (
        2, 0, 2, 1, {"http_status": 1})


# --- the embed queue -----------------------------------------------------------------------------


def test_the_queue_pending_vectors_and_embed_errors(store):
    for i in range(6):  # one batch each: pending gives the oldest first
        store.upsert_images([record(i)])
    store.ensure_model(MODEL, DIM)
    store.ensure_model(MODEL, DIM)  # idempotent
    assert [r.id for r in store.pending(MODEL, 100)] == [image_id(i) for i in range(6)]
    assert [r.id for r in store.pending(MODEL, 4)] == [image_id(i) for i in range(4)]
    assert store.pending(MODEL, 0) == []
    assert image_id(0) not in {r.id for r in store.pending(MODEL, 100, exclude=[image_id(0)])}

    vectors = unit_vectors(3, DIM, seed=2)
    store.set_vectors(MODEL, [image_id(i) for i in range(3)], vectors)
    store.set_embed_errors(MODEL, {image_id(3): "not_an_image"})
    assert [r.id for r in store.pending(MODEL, 100)] == [image_id(4), image_id(5)]
    counts = store.counts(MODEL)
    assert (counts.images, counts.embedded, counts.pending, counts.embed_failed) == (6, 3, 2, 1)
    for i in range(3):
        np.testing.assert_array_equal(store.get_vector(MODEL, image_id(i)), vectors[i])
    assert store.get_vector(MODEL, image_id(4)) is None
    assert store.get_vector("another-model", image_id(0)) is None
    assert len(store.pending("another-model", 100)) == 6  # a new model re-embeds every stored image
    assert store.counts("another-model").pending == 6

    # a vector written later replaces the embed error: counted once, as embedded
    store.set_vectors(MODEL, [image_id(3)], unit_vectors(1, DIM, seed=3))
    counts = store.counts(MODEL)
    assert (counts.embedded, counts.pending, counts.embed_failed) == (4, 2, 0)
    # the same id twice in one write: the last vector wins
    twice = unit_vectors(2, DIM, seed=4)
    store.set_vectors(MODEL, [image_id(4), image_id(4)], twice)
    np.testing.assert_array_equal(store.get_vector(MODEL, image_id(4)), twice[1])
    assert store.counts(MODEL).embedded == 5


def test_writes_for_unknown_ids_are_reported_and_the_rest_is_written(store):
    store.upsert_images([record(1), record(2)])
    with pytest.raises(StoreWriteError) as error:
        store.set_vectors(MODEL, [image_id(1), "f" * 64], unit_vectors(2, DIM, seed=5))
    assert list(error.value.failures) == ["f" * 64] and "no image record" in str(error.value)
    with pytest.raises(StoreWriteError) as error:
        store.set_embed_errors(MODEL, {image_id(2): "not_an_image", "e" * 64: "not_an_image"})
    assert list(error.value.failures) == ["e" * 64]
    counts = store.counts(MODEL)
    assert (counts.images, counts.embedded, counts.embed_failed, counts.pending) == (2, 1, 1, 0)
    assert store.get_vector(MODEL, "f" * 64) is None


def test_the_first_vectors_set_the_model_up_and_fix_its_dimension(store):
    """No ``ensure_model`` first: the first write creates the model's index with its dimension."""
    store.upsert_images([record(1), record(2)])
    vector = unit_vectors(1, DIM, seed=6)
    store.set_vectors(MODEL, [image_id(1)], vector)
    store.refresh()
    assert [h.id for h in store.search(MODEL, vector[0], 5)] == [image_id(1)]

    with pytest.raises(StoreWriteError) as error:  # another dimension: rejected, nothing written
        store.set_vectors(MODEL, [image_id(2)], unit_vectors(1, DIM * 2, seed=7))
    assert list(error.value.failures) == [image_id(2)]
    assert store.get_vector(MODEL, image_id(2)) is None and store.counts(MODEL).embedded == 1
    with pytest.raises(ValueError):
        store.ensure_model(MODEL, DIM * 2)
    with pytest.raises(ValueError):  # a caller's mistake, not the store's
        store.set_vectors(MODEL, [image_id(1), image_id(2)], unit_vectors(1, DIM, seed=8))


# --- search --------------------------------------------------------------------------------------


def test_search_ranks_by_dot_product_with_filters_and_min_score(store):
    n = 60
    records = [record(i, fmt=("jpeg", "png", "webp")[i % 3], width=50 + 10 * i, height=400 - 5 * i,
                      source="folder" if i % 4 == 0 else "url") for i in range(n)]
    vectors = unit_vectors(n, DIM, seed=9)
    filled(store, records, vectors)
    query = unit_vectors(1, DIM, seed=10)[0]
    scores = vectors @ query

    def expected(keep, k: int) -> list[str]:
        return [records[i].id for i in np.argsort(-scores) if keep(records[i])][:k]

    hits = store.search(MODEL, query, 5)
    assert [h.id for h in hits] == expected(lambda r: True, 5)
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:5], atol=1e-5)
    assert hits[0].record == records[int(np.argmax(scores))]
    assert [h.id for h in store.search(MODEL, query, 1000)] == expected(lambda r: True, n)  # k over the size: all
    assert store.search(MODEL, query, 0) == [] and store.search(MODEL, query, -3) == []
    assert len(store.search(MODEL, query, MAX_K + 1)) == n  # k over the cap is not an error (the cap: below)

    for filters in [SearchFilters(format=["png"]), SearchFilters(source=["folder"]),
                    SearchFilters(min_width=300, max_height=300), SearchFilters(format=["jpeg", "webp"], min_height=200)]:
        hits = store.search(MODEL, query, 5, filters)
        assert [h.id for h in hits] == expected(filters.matches, 5), filters
    assert store.search(MODEL, query, 5, SearchFilters(format=["gif"])) == []

    third = float(np.sort(scores)[::-1][2])
    assert [h.id for h in store.search(MODEL, query, 5, min_score=third - 1e-6)] == expected(lambda r: True, 3)
    assert store.search(MODEL, query, 5, min_score=1.01) == []


def test_rankings_match_numpy_brute_force_over_the_stored_vectors(store, request):
    """An oracle outside both stores: the exact top k by numpy over the vectors the store gives back
    (``get_vector``), with the filters applied to the records by Python, for many queries, filters and k.
    The local store's graph index is approximate by design (its candidates rescored exactly): there,
    what it returns must be in the exact order with the exact scores, and miss few of the true top k."""
    approximate = request.node.callspec.params["store"] == "local-hnsw"
    n, rng = 200, np.random.default_rng(31)
    records = [record(i, fmt=str(rng.choice(["jpeg", "png", "webp", "gif"])), width=int(rng.integers(16, 2000)),
                      height=int(rng.integers(16, 2000)), source=str(rng.choice(["url", "folder"]))) for i in range(n)]
    written = unit_vectors(n, DIM, seed=32)
    filled(store, records, written)
    stored = np.stack([store.get_vector(MODEL, r.id) for r in records])
    np.testing.assert_array_equal(stored, written)
    position = {r.id: i for i, r in enumerate(records)}

    filter_choices = [None, SearchFilters(format=["png"]), SearchFilters(format=["gif", "webp"], source=["folder"]),
                      SearchFilters(min_width=500, max_width=1500), SearchFilters(max_height=300),
                      SearchFilters(source=["url"], min_height=1000, format=["jpeg"]), SearchFilters(format=["bmp"])]
    wanted = found = 0
    for query in unit_vectors(12, DIM, seed=33):
        scores = stored @ query
        order = np.argsort(-scores, kind="stable")
        for filters in filter_choices:
            keep = [records[i].id for i in order if filters is None or filters.matches(records[i])]
            for k in (1, 7, 40):
                hits = store.search(MODEL, query, k, filters)
                ids = [h.id for h in hits]
                np.testing.assert_allclose([h.score for h in hits], [scores[position[i]] for i in ids], atol=1e-5)
                assert [h.record for h in hits] == [records[position[i]] for i in ids]
                assert len(ids) == min(k, len(keep)), (filters, k)
                if approximate:
                    assert ids == [i for i in keep if i in set(ids)], (filters, k)  # the exact order among them
                else:
                    assert ids == keep[:k], (filters, k)
                wanted, found = wanted + len(keep[:k]), found + len(set(ids) & set(keep[:k]))
    assert wanted > 2000  # the filters leave enough to compare
    assert found / wanted >= (0.95 if approximate else 1.0), found / wanted


def test_k_is_capped_at_max_k(store):
    """More than ``MAX_K`` images (tiny vectors, one batch): a search for more gives exactly ``MAX_K``,
    best first. Without the cap the local store would give them all and Elasticsearch refuse the search."""
    model, n = "cap-model", MAX_K + 3
    records = [ImageRecord(id=image_id(i), width=1, height=1, format="png", bytes=1, sources=["folder"]) for i in range(n)]
    vectors = unit_vectors(n, 4, seed=34)
    store.upsert_images(records)
    store.set_vectors(model, [r.id for r in records], vectors)
    store.refresh()
    query = unit_vectors(1, 4, seed=35)[0]
    hits = store.search(model, query, n)
    assert len(hits) == MAX_K
    scores = np.array([h.score for h in hits])
    assert (np.diff(scores) <= 1e-6).all()  # best first
    assert len(store.search(model, query, 10**9)) == MAX_K
    if isinstance(store, LocalStore):  # exact: the true best MAX_K (Elasticsearch's graph may trade a few near the end)
        best = {records[i].id for i in np.argsort(-(vectors @ query))[:MAX_K]}
        assert {h.id for h in hits} == best


def test_several_vectors_per_image_score_by_their_best(store):
    """A BLIP-2 image is Q vectors; it scores a query by the best of them (max over queries), with
    filters, min_score, rewrites, removal and the model's fixed shape kept as for one vector."""
    n, q, model = 40, 4, "multi-model"
    records = [record(i, fmt=("jpeg", "png")[i % 2]) for i in range(n)]
    vectors = unit_vectors(n * q, DIM, seed=21).reshape(n, q, DIM)
    query = unit_vectors(1, DIM, seed=22)[0]
    store.upsert_images(records)
    store.set_vectors(model, [r.id for r in records], vectors)
    store.set_vectors(model, [r.id for r in records[:5]], vectors[:5])  # rewritten: still one image each
    store.refresh()
    scores = (vectors @ query).max(1)
    best = [records[i].id for i in np.argsort(-scores)]
    hits = store.search(model, query, 10)
    assert [h.id for h in hits] == best[:10]
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:10], atol=1e-5)
    pngs = [i for i in best if store.get(i).format == "png"]
    assert [h.id for h in store.search(model, query, 5, SearchFilters(format=["png"]))] == pngs[:5]
    fourth = float(np.sort(scores)[::-1][3])
    assert [h.id for h in store.search(model, query, 10, min_score=fourth - 1e-6)] == best[:4]
    np.testing.assert_array_equal(store.get_vector(model, records[7].id), vectors[7])
    assert store.counts(model).embedded == n

    for wrong in (unit_vectors(3, DIM, seed=23)[None], unit_vectors(1, DIM, seed=24)):  # 3 queries; one vector
        with pytest.raises(StoreWriteError) as error:
            store.set_vectors(model, [records[0].id], wrong)
        assert list(error.value.failures) == [records[0].id] and "4 16-d vectors per image" in str(error.value)
    np.testing.assert_array_equal(store.get_vector(model, records[0].id), vectors[0])
    with pytest.raises(ValueError):
        store.ensure_model(model, DIM)
    store.ensure_model(model, DIM, q)  # idempotent with its own shape

    # a record found again from a folder: its sources change and the vector documents follow (a
    # partial update, which must keep the nested vectors Elasticsearch does not keep in _source)
    moved = store.get(best[1])
    store.upsert_images([moved.model_copy(update={"sources": ["folder"]})])
    store.refresh()
    assert [h.id for h in store.search(model, query, 3, SearchFilters(source=["folder"]))] == [best[1]]
    assert store.search(model, query, 1)[0].id == best[0]
    np.testing.assert_array_equal(store.get_vector(model, best[1]), vectors[[r.id for r in records].index(best[1])])

    store.remove_images([best[0]])
    store.refresh()
    assert [h.id for h in store.search(model, query, 3)] == best[1:4]


def test_a_model_never_set_up_is_unavailable_and_an_empty_one_answers_nothing(store):
    store.upsert_images([record(1)])
    query = unit_vectors(1, DIM, seed=11)[0]
    with pytest.raises(StoreUnavailable, match="never-embedded"):
        store.search("never-embedded", query, 3)
    assert store.counts("never-embedded").pending == 1  # the queue still knows what it needs
    store.ensure_model("empty-model", DIM)
    assert store.search("empty-model", query, 3) == []


@pytest.fixture()
def crowded(store):
    """20 JPEG folder images of 1000x1000 very close to the query (cosine 0.99..0.95) and 3 PNG URL
    images of 200x200 far from it (cosine 0.5, 0.4, 0.3): the 3 are never in the unfiltered top 20."""
    query = np.zeros(DIM, np.float32)
    query[0] = 1.0
    rows = [(i, "jpeg", 1000, "folder", 0.99 - 0.002 * i) for i in range(20)]
    rows += [(100 + i, "png", 200, "url", cosine) for i, cosine in enumerate((0.5, 0.4, 0.3))]
    filled(store, [ImageRecord(id=image_id(i), width=side, height=side, format=fmt, bytes=1000, sources=[source])
                   for i, fmt, side, source, _ in rows],
           np.stack([toward(query, cosine, seed=i) for i, *_, cosine in rows]))
    return store, query, [image_id(100 + i) for i in range(3)]


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


def test_a_merged_source_reaches_the_source_filter(store):
    filled(store, [record(1), record(2)], unit_vectors(2, DIM, seed=12))
    store.upsert_images([record(1, source="folder", urls=[])])  # the same picture found in a folder
    store.refresh()
    query = store.get_vector(MODEL, image_id(2))
    assert [h.id for h in store.search(MODEL, query, 5, SearchFilters(source=["folder"]))] == [image_id(1)]


# --- concurrency and errors ----------------------------------------------------------------------


def test_two_writers_at_once_never_duplicate(store):
    records = [record(i) for i in range(200)]
    vectors = unit_vectors(200, DIM, seed=13)
    store.ensure_model(MODEL, DIM)
    created: list[list[bool]] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            order = np.random.default_rng(seed).permutation(200)
            for start in range(0, 200, 25):
                batch = [records[i] for i in order[start : start + 25]]
                created.append(store.upsert_images(batch))
                store.set_vectors(MODEL, [r.id for r in batch], vectors[order[start : start + 25]])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(sum(flags) for flags in created) == 200  # each image was new exactly once
    counts = store.counts(MODEL)
    assert (counts.images, counts.embedded, counts.pending) == (200, 200, 0)
    store.refresh()
    assert len(store.search(MODEL, vectors[0], 500)) == 200


def test_a_local_store_whose_folder_cannot_be_made_says_where(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreUnavailable, match=str(tmp_path / "a-file")):
        make_store(Settings(data_dir=tmp_path / "a-file" / "var", store="local", dependency_wait_s=1))


@pytest.mark.parametrize("kind", ["local", "elasticsearch"])
def test_a_store_that_cannot_be_reached_says_where_for_reads_and_writes(kind, request, tmp_path, monkeypatch):
    """Local: the store is open, and another process holds its database exclusively (a backup, a
    manual `sqlite3` session); Elasticsearch: nothing listens at the URL. Either way each read and
    write gives the caller ``StoreUnavailable`` naming the place, and ``health`` says not ok."""
    with contextlib.ExitStack() as stack:
        if kind == "local":
            monkeypatch.setattr(database, "READ_WAIT_S", 0.5)  # how long a read waits for the lock
            settings = Settings(data_dir=tmp_path / "var", store="local", dependency_wait_s=0.5)
            store = stack.enter_context(contextlib.closing(make_store(settings)))
            # Connections are per thread and opened on use: this thread's goes, as when a request
            # thread of the API ends (an open connection would keep the exclusive lock away).
            store.close()
            where = str(tmp_path / "var" / "store.sqlite3")
            lock = HeldLock(tmp_path / "var" / "store.sqlite3", "exclusive")
            stack.callback(lock.release)
        else:
            port = free_port()
            settings = Settings(store="elasticsearch", es_url=f"http://127.0.0.1:{port}", dependency_wait_s=1)
            store = stack.enter_context(contextlib.closing(make_store(settings)))  # connects at the first call
            where = f"127.0.0.1:{port}"

        actions = {
            "search": lambda: store.search(MODEL, unit_vectors(1, DIM, seed=14)[0], 3),
            "keyword_search": lambda: store.keyword_search("a red circle", 3),
            "get": lambda: store.get(image_id(1)),
            "counts": lambda: store.counts(MODEL),
            "upsert_images": lambda: store.upsert_images([record(1)]),
            "record_failures": lambda: store.record_failures([UrlFailure(url="https://a.example/1.jpg", reason="timeout")]),
            "set_vectors": lambda: store.set_vectors(MODEL, [image_id(1)], unit_vectors(1, DIM, seed=15)),
        }
        for name, action in actions.items():
            with pytest.raises(StoreUnavailable) as error:
                action()
            assert where in str(error.value), (name, str(error.value))
        health = store.health()
        assert health["ok"] is False and where in str(health), health
    if kind == "local":  # the lock gone, the same store answers: nothing was half-written meanwhile
        with contextlib.closing(make_store(settings)) as store:
            assert store.get(image_id(1)) is None and store.counts(MODEL).images == 0


# --- removal -------------------------------------------------------------------------------------


def test_removed_images_leave_every_answer_and_are_remembered_until_stored_again(store):
    records = [record(i, urls=[f"https://example.com/{i}.jpg"]) for i in range(6)]
    records[4] = records[4].model_copy(update={"paths": ["/photos/trip/4.jpg"], "sources": ["url", "folder"]})
    records[5] = records[5].model_copy(update={"paths": ["/photos/trip-2/5.jpg"]})  # not under /photos/trip/
    vectors = unit_vectors(6, DIM, seed=17)
    filled(store, records, vectors)
    store.set_vectors("second-model", [r.id for r in records], unit_vectors(6, DIM, seed=18))
    assert store.find_ids(url="https://example.com/1.jpg") == [image_id(1)]
    assert store.find_ids(folder="/photos/trip") == [image_id(4)]

    removed = store.remove_images([image_id(1), image_id(4), "f" * 64])
    assert sorted(r.id for r in removed) == sorted([image_id(1), image_id(4)])
    assert store.remove_images([image_id(1)]) == []  # idempotent
    store.refresh()
    assert store.get(image_id(1)) is None and store.get(image_id(4)) is None
    assert store.get_vector(MODEL, image_id(1)) is None and store.get_vector("second-model", image_id(4)) is None
    for model in (MODEL, "second-model"):
        counts = store.counts(model)
        assert (counts.images, counts.embedded, counts.pending) == (4, 4, 0), model
    for i in (1, 4):  # its own vector as the query: it would be first if it were there
        hits = store.search(MODEL, vectors[i], 10)
        assert image_id(i) not in {h.id for h in hits} and len(hits) == 4
    assert store.known_urls(["https://example.com/1.jpg"]) == set()
    assert store.removed_urls(["https://example.com/1.jpg", "https://example.com/2.jpg"]) == {"https://example.com/1.jpg"}
    assert store.removed_ids([image_id(4), image_id(5)]) == {image_id(4)}
    # still found by URL and folder, so an interrupted removal can be run again
    assert store.find_ids(url="https://example.com/1.jpg") == [image_id(1)]
    assert store.find_ids(folder="/photos/trip/") == [image_id(4)]

    # stored again on purpose (`--retry-removed`): no longer removed, and pending for every model
    assert store.upsert_images([records[1]]) == [True]
    store.refresh()
    assert store.removed_urls(["https://example.com/1.jpg"]) == set() and store.removed_ids([image_id(1)]) == set()
    assert [r.id for r in store.pending(MODEL, 10)] == [image_id(1)]
    store.set_vectors(MODEL, [image_id(1)], vectors[1:2])
    store.refresh()
    assert store.search(MODEL, vectors[1], 1)[0].id == image_id(1)


# --- keyword search (mode=text|hybrid) -----------------------------------------------------------


def test_keyword_search_finds_the_words_of_captions_and_file_names(store):
    records = [
        record(1, urls=["https://example.com/photos/Eiffel_Tower-1889.jpg?size=large"]),
        record(2).model_copy(update={"captions": ["Zanzibar lighthouse at dusk"]}),
        record(3, fmt="png").model_copy(update={"captions": ["a lighthouse"]}),
        record(4, fmt="png", source="folder", urls=[]).model_copy(update={"paths": ["/photos/zanzibar-beach.png"]}),
        record(5).model_copy(update={"captions": ["a red circle"]}),
    ]
    store.upsert_images(records)
    store.refresh()
    assert [h.id for h in store.keyword_search("eiffel TOWER", 10)] == [image_id(1)]
    hits = store.keyword_search("Zanzibar lighthouse", 10)
    assert hits[0].id == image_id(2) and {h.id for h in hits} == {image_id(i) for i in (2, 3, 4)}
    assert hits[0].score > hits[1].score > 0 and hits[0].record == records[1]
    assert [h.id for h in store.keyword_search("Zanzibar lighthouse", 1)] == [image_id(2)]
    png = store.keyword_search("Zanzibar lighthouse", 10, SearchFilters(format=["png"]))
    assert {h.id for h in png} == {image_id(3), image_id(4)}
    assert store.keyword_search("nothing matches this", 10) == [] and store.keyword_search("  ?! ", 10) == []
    store.remove_images([image_id(2)])
    store.refresh()
    assert image_id(2) not in {h.id for h in store.keyword_search("Zanzibar lighthouse", 10)}


# --- photo metadata (EXIF): filters, and metadata read after the image was stored --------------------


def photo_records(n: int, seed: int) -> tuple[list[ImageRecord], PhotoSet]:
    made = photo_set(n, seed)
    return [record(i, fmt=("jpeg", "heif")[i % 2]).model_copy(update={"photo": p}) for i, p in enumerate(made.photos)], made


def test_photo_filters_apply_before_the_top_k_as_numpy_says(store):
    """Date, camera and place filters (alone, together, with another filter) against oracles outside
    the store: UTC seconds compared in Python, the camera table of tests/support/photos.py, numpy's
    great-circle distances; an image without the field never matches. Fewer images than the graph
    index's least candidates (64), so that its answers are the exact ones too."""
    n = 60
    records, made = photo_records(n, seed=41)
    vectors = unit_vectors(n, DIM, seed=42)
    filled(store, records, vectors)
    query = unit_vectors(1, DIM, seed=43)[0]
    order = np.argsort(-(vectors @ query))
    utc = np.array([np.nan if t is None else t for t in made.utc])
    start, end = datetime(2020, 6, 1, tzinfo=timezone.utc).timestamp(), datetime(2021, 3, 1, tzinfo=timezone.utc).timestamp()
    paris = distance_km(*PARIS, made.positions[:, 0], made.positions[:, 1])
    fiji = distance_km(*FIJI, made.positions[:, 0], made.positions[:, 1])
    canon = np.array([c == CAMERAS[1] for c in made.cameras])
    cases = [
        (SearchFilters(taken_after="2020-06-01"), utc >= start),
        (SearchFilters(taken_before="2021-02-28"), utc < end),  # a date alone: up to its end
        (
            SearchFilters(taken_after="2020-06-01T02:00:00+02:00", taken_before="2021-03-01T00:00:00"),
            (utc >= start) & (utc < end),
        ),
        (SearchFilters(near=f"{PARIS[0]},{PARIS[1]}", within_km=5), paris <= 5),
        (SearchFilters(near={"lat": FIJI[0], "lon": FIJI[1]}, within_km=10), fiji <= 10),  # across the antimeridian
        (
            SearchFilters(camera="Canon", near=list(PARIS), within_km=10, taken_after="2020-06-01"),
            canon & (paris <= 10) & (utc >= start),
        ),
        (
            SearchFilters(format=["heif"], camera="APPLE"),
            np.array([i % 2 == 1 and c in CAMERA_QUERIES["apple"] for i, c in enumerate(made.cameras)]),
        ),
        *[
            (SearchFilters(camera=name), np.array([c in cameras for c in made.cameras]))
            for name, cameras in CAMERA_QUERIES.items()
        ],
    ]
    assert (np.abs(paris[~np.isnan(paris)] - 5) > 0.05).all() and (np.abs(fiji[~np.isnan(fiji)] - 10) > 0.05).all()
    for filters, keep in cases:
        expected = [records[i].id for i in order if keep[i]]
        for k in (3, n):
            assert [h.id for h in store.search(MODEL, query, k, filters)] == expected[:k], (filters, k)
        assert 0 < len(expected) < n or filters.camera in ("nikon", "iphone"), filters
    hits = store.search(MODEL, query, n, SearchFilters(near=f"{PARIS[0]},{PARIS[1]}", within_km=5))
    assert [h.record.photo for h in hits] == [records[[r.id for r in records].index(h.id)].photo for h in hits]
    words = store.keyword_search("jpg", n, SearchFilters(camera="canon"))  # keyword search filters alike
    assert {h.id for h in words} == {records[i].id for i in range(n) if canon[i]}


def test_photo_metadata_read_later_reaches_records_and_filters_without_new_vectors(store):
    """Records stored before ingest read EXIF (``photo`` None) are listed by id, page by page; their
    metadata written later is in the record and in what the filters read, the vectors untouched."""
    records = [record(i) for i in range(7)]
    vectors = unit_vectors(7, DIM, seed=44)
    filled(store, records[:5], vectors[:5])
    store.upsert_images([records[5].model_copy(update={"photo": PhotoMetadata()})])  # read: nothing found
    store.upsert_images([records[6].model_copy(update={"photo": PhotoMetadata(camera_make="Canon")})])
    store.refresh()
    unread = sorted(r.id for r in records[:5])
    assert [r.id for r in store.photo_metadata_unread(3)] == unread[:3]
    assert [r.id for r in store.photo_metadata_unread(3, after=unread[2])] == unread[3:]
    assert store.photo_metadata_unread(0) == [] and store.photo_metadata_unread(3, after=unread[-1]) == []

    taken = datetime(2022, 8, 1, 9, 30, tzinfo=timezone(timedelta(hours=-4)))
    read = {image_id(0): PhotoMetadata(taken_at=taken, camera_make="Canon", camera_model="EOS R5",
                                       location=GeoPoint(lat=PARIS[0], lon=PARIS[1])),
            image_id(1): PhotoMetadata(), "e" * 64: PhotoMetadata(camera_make="Canon")}  # "e...": no such record
    store.set_photo_metadata(read)
    store.set_photo_metadata({})
    store.refresh()
    assert store.get(image_id(0)).photo == read[image_id(0)] and store.get(image_id(1)).photo == PhotoMetadata()
    assert store.get("e" * 64) is None
    assert sorted(r.id for r in store.photo_metadata_unread(10)) == sorted(image_id(i) for i in (2, 3, 4))
    np.testing.assert_array_equal(store.get_vector(MODEL, image_id(0)), vectors[0])  # not embedded again
    for filters in (SearchFilters(camera="canon eos r5"), SearchFilters(taken_after="2022-08-01T13:30:00Z"),
                    SearchFilters(near=list(PARIS), within_km=1)):
        assert [h.id for h in store.search(MODEL, vectors[0], 10, filters)] == [image_id(0)], filters

    # Found again (same bytes): metadata read once stays; a later read of the same bytes changes nothing
    store.upsert_images([records[0].model_copy(update={"urls": ["https://b.example/0.jpg"]})])
    store.refresh()
    assert store.get(image_id(0)).photo == read[image_id(0)]
    store.remove_images([image_id(0)])
    store.refresh()
    assert store.search(MODEL, vectors[0], 10, SearchFilters(camera="canon")) == []
    assert image_id(0) not in {r.id for r in store.photo_metadata_unread(10)}


def test_a_deeper_search_begins_with_the_shallower_one(store):
    """Pages rely on it: the top k of a larger k starts with the top k of a smaller one (ties too)."""
    n = 50
    records, _ = photo_records(n, seed=45)
    vectors = unit_vectors(n, DIM, seed=46)
    vectors[10:20] = vectors[0]  # equal scores: their order must not depend on k
    filled(store, records, vectors)
    for filters in (None, SearchFilters(camera="apple")):
        deepest = [h.id for h in store.search(MODEL, vectors[0], n, filters)]
        for k in (1, 4, 11, 15, 23):
            assert [h.id for h in store.search(MODEL, vectors[0], k, filters)] == deepest[:k], (filters, k)


# --- tags (zero-shot labels): the queue of images to tag, the tags, their filter, keywords and counts --


def test_embedded_images_not_tagged_as_asked_are_listed_with_their_vectors_page_by_page(store):
    """``untagged`` lists the images with a vector for the model whose tags are missing or came from
    another tagging (another key), by id, with the vectors ``get_vector`` gives: ingest tags them from those."""
    records = [record(i) for i in range(7)]
    vectors = unit_vectors(5, DIM, seed=51)
    filled(store, records[:5], vectors)
    store.upsert_images(records[5:])  # no vector: nothing to tag from
    embedded = sorted(image_id(i) for i in range(5))
    listed = store.untagged(MODEL, "key-1", 3)
    assert [i for i, _ in listed] == embedded[:3]
    for i, vector in listed:
        np.testing.assert_array_equal(vector, store.get_vector(MODEL, i))
    assert [i for i, _ in store.untagged(MODEL, "key-1", 3, after=embedded[2])] == embedded[3:]
    assert store.untagged(MODEL, "key-1", 0) == [] and store.untagged("another-model", "key-1", 10) == []

    store.set_tags({embedded[0]: ["red", "circle"], embedded[1]: [], "e" * 64: ["red"]}, "key-1")  # "e...": no record
    store.set_tags({}, "key-1")
    assert store.get("e" * 64) is None
    assert [i for i, _ in store.untagged(MODEL, "key-1", 10)] == embedded[2:]  # tagged, even with no tag
    assert [i for i, _ in store.untagged(MODEL, "key-2", 10)] == embedded  # another tagging: all again
    store.remove_images([embedded[2]])
    assert [i for i, _ in store.untagged(MODEL, "key-1", 10)] == embedded[3:]

    several = "blip-like"  # a model with several vectors per image: each listed in its [Q, D] shape
    store.set_vectors(several, [image_id(5)], unit_vectors(3, DIM, seed=52)[None])
    [(found, vector)] = store.untagged(several, "key-1", 10)
    assert found == image_id(5) and vector.shape == (3, DIM)


def test_tags_are_kept_filtered_inside_the_knn_matched_as_keywords_and_counted(store):
    n = 12
    records = [record(i) for i in range(n)]
    vectors = unit_vectors(n, DIM, seed=53)
    filled(store, records, vectors)
    given = {image_id(i): (["red", "circle"] if i % 3 == 0 else ["red"] if i % 3 == 1 else ["teddy bear"]) for i in range(n - 1)}
    store.set_tags(given, "key-1")
    store.refresh()
    assert store.get(image_id(0)).tags == ["red", "circle"] and store.get(image_id(n - 1)).tags == []
    scores = vectors @ vectors[0]

    def expected(keep) -> list[str]:
        return [image_id(int(i)) for i in np.argsort(-scores) if keep(given.get(image_id(int(i)), []))]

    for tags, keep in ((["red"], lambda t: "red" in t), (["red", "circle"], lambda t: {"red", "circle"} <= set(t)),
                       (["Teddy  Bear"], lambda t: "teddy bear" in t)):
        filters = SearchFilters(tags=tags)
        assert [h.id for h in store.search(MODEL, vectors[0], 5, filters)] == expected(keep)[:5], tags
        assert [h.id for h in store.search(MODEL, vectors[0], n, filters)] == expected(keep), tags
    assert store.search(MODEL, vectors[0], 5, SearchFilters(tags=["blue"])) == []
    assert {h.id for h in store.keyword_search("circle", n)} == {image_id(i) for i in range(0, n - 1, 3)}  # by tags alone
    assert {h.id for h in store.keyword_search("bear", n, SearchFilters(tags=["teddy bear"]))} == {
        image_id(i) for i in range(2, n - 1, 3)}
    assert store.tag_counts(10) == [("red", 8), ("circle", 4), ("teddy bear", 3)]
    assert store.tag_counts(2) == [("red", 8), ("circle", 4)] and store.tag_counts(0) == []

    # tagged again: replaced everywhere; merges, photo metadata and new vectors keep the tags
    store.set_tags({image_id(0): ["blue"], image_id(3): ["circle", "blue"]}, "key-2")
    store.upsert_images([records[3].model_copy(update={"urls": ["https://b.example/3.jpg"], "sources": ["folder"]})])
    store.set_photo_metadata({image_id(3): PhotoMetadata(camera_make="Canon")})
    store.set_vectors(MODEL, [image_id(3)], vectors[:1])
    store.refresh()
    assert store.get(image_id(3)).tags == ["circle", "blue"] and store.get(image_id(3)).sources == ["url", "folder"]
    assert [h.id for h in store.search(MODEL, vectors[0], n, SearchFilters(tags=["blue"], camera="canon"))] == [image_id(3)]
    assert {h.id for h in store.search(MODEL, vectors[0], n, SearchFilters(tags=["blue"]))} == {image_id(0), image_id(3)}
    assert image_id(0) not in {h.id for h in store.keyword_search("circle", n)}
    assert store.tag_counts(10) == [("red", 6), ("circle", 3), ("teddy bear", 3), ("blue", 2)]  # ties by tag
    store.remove_images([image_id(3)])
    store.refresh()
    assert store.tag_counts(10) == [("red", 6), ("teddy bear", 3), ("circle", 2), ("blue", 1)]
    assert store.search(MODEL, vectors[0], n, SearchFilters(tags=["blue"], camera="canon")) == []
