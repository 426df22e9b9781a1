"""The local store's graph index (imagesearch/stores/local/vector_index.py) past ``index_min_vectors``:
the same answers as exact search on CLIP-like vectors, snapshots that a new process opens and
catches up from, and every way a snapshot can be missing, stale or broken. The store contract
(tests/test_store_contract.py) also runs on the index, with it on from the first vector."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import numpy as np
import pytest

from imagesearch.records import SearchFilters
from imagesearch.stores.local import LocalStore
from imagesearch.stores.local.vector_index import SAVE_EVERY
from tests.support.store_data import image_id, record, unit_vectors

MODEL, DIM = "clip-like", 64


def clip_like(n: int, seed: int) -> np.ndarray:
    """Unit vectors in clusters around a shared direction, as CLIP's image embeddings are (the
    worst case for a graph index, uniform random vectors, is not what users store)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, DIM)).astype(np.float32)
    v = 2.0 + centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    v[:, 0] += 6.0  # the shared direction
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def filled_store(path, n: int, seed: int = 1, index_min_vectors: int = 1_000) -> tuple[LocalStore, np.ndarray]:
    store = LocalStore(path, index_min_vectors=index_min_vectors)
    vectors = clip_like(n, seed)
    for start in range(0, n, 2_000):
        ids = range(start, min(start + 2_000, n))
        store.upsert_images([record(i, fmt=("jpeg", "png")[i % 2], width=100 + i % 997) for i in ids])
        store.set_vectors(MODEL, [image_id(i) for i in ids], vectors[start : start + len(ids)])
    return store, vectors


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, keep=None) -> list[str]:
    order = np.argsort(-(vectors @ query), kind="stable")
    return [image_id(int(i)) for i in order if keep is None or keep(int(i))][:k]


def snapshots(store: LocalStore) -> list[str]:
    return sorted(p.name for p in store.index_folder.glob("*")) if store.index_folder.exists() else []


def test_past_the_threshold_the_index_answers_as_exact_search_with_exact_scores(tmp_path):
    store, vectors = filled_store(tmp_path / "store.db", 6_000)
    queries = clip_like(40, seed=99)
    recall = []
    for query in queries:
        hits = store.search(MODEL, query, 10)
        expected = exact_top(vectors, query, 10)
        recall.append(len({h.id for h in hits} & set(expected)) / 10)
        by_id = {image_id(i): float(vectors[i] @ query) for i in range(len(vectors))}
        np.testing.assert_allclose([h.score for h in hits], [by_id[h.id] for h in hits], atol=1e-6)  # rescored
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert np.mean(recall) >= 0.99, recall
    assert store.searchers.indexes and not store.searchers.matrices  # the float32 matrix is not held beside the index
    # min_score cuts the rescored list
    top3 = store.search(MODEL, queries[0], 10)[:3]
    assert [h.id for h in store.search(MODEL, queries[0], 10, min_score=top3[-1].score - 1e-7)] == [h.id for h in top3]


def test_filters_broad_and_narrow_find_the_exact_matches(tmp_path):
    store, vectors = filled_store(tmp_path / "store.db", 6_000)
    query = clip_like(1, seed=98)[0]
    png = SearchFilters(format=["png"])  # half the images: found among the graph's candidates
    hits = store.search(MODEL, query, 10, png)
    assert len(hits) == 10 and all(h.record.format == "png" for h in hits)
    assert len({h.id for h in hits} & set(exact_top(vectors, query, 10, keep=lambda i: i % 2 == 1))) >= 9
    narrow = SearchFilters(min_width=1_090)  # 6 widths of 997, a few dozen images: exact over them
    widths = [100 + i % 997 for i in range(len(vectors))]
    assert [h.id for h in store.search(MODEL, query, 10, narrow)] == exact_top(
        vectors, query, 10, keep=lambda i: widths[i] >= 1_090
    )
    assert store.search(MODEL, query, 10, SearchFilters(format=["gif"])) == []


def test_a_store_growing_past_the_threshold_switches_to_the_index_in_a_running_process(tmp_path):
    store, vectors = filled_store(tmp_path / "store.db", 900)
    query = clip_like(1, seed=97)[0]
    assert [h.id for h in store.search(MODEL, query, 5)] == exact_top(vectors, query, 5)
    assert store.searchers.matrices and not store.searchers.indexes  # below 1,000: exact
    more = clip_like(300, seed=2)
    store.upsert_images([record(i) for i in range(900, 1_200)])
    store.set_vectors(MODEL, [image_id(i) for i in range(900, 1_200)], more)
    everything = np.concatenate([vectors, more])
    store.search(MODEL, query, 5)  # sees the new rows in its matrix, and the count
    hits = store.search(MODEL, query, 5)
    assert store.searchers.indexes and not store.searchers.matrices
    # The graph is approximate, and usearch builds it on several threads, so its edges differ from
    # run to run: about 1 build in 30 misses one of these 5 (the recall tests measure how often).
    assert len(hits) == 5 and len({h.id for h in hits} & set(exact_top(everything, query, 5))) >= 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    by_id = {image_id(i): float(everything[i] @ query) for i in range(len(everything))}
    np.testing.assert_allclose([h.score for h in hits], [by_id[h.id] for h in hits], atol=1e-6)  # rescored


def test_a_repeated_query_sees_every_change_written_since(tmp_path):
    """The index keeps a repeated query's candidates until it changes: a vector written by another
    process, or one removed, shows in the very next answer."""
    store, vectors = filled_store(tmp_path / "store.db", 2_000)
    query = clip_like(1, seed=96)[0]
    first = [h.id for h in store.search(MODEL, query, 10)]
    assert [h.id for h in store.search(MODEL, query, 10)] == first
    writer = LocalStore(tmp_path / "store.db", index_min_vectors=1_000)  # as ingest in another process
    try:
        writer.upsert_images([record(5_000)])
        writer.set_vectors(MODEL, [image_id(5_000)], query[None])  # the query itself: the best match there is
        assert store.search(MODEL, query, 10)[0].id == image_id(5_000)
        writer.remove_images([image_id(5_000), first[0]])
        after = [h.id for h in store.search(MODEL, query, 10)]
        assert len(after) == 10 and image_id(5_000) not in after and first[0] not in after
    finally:
        writer.close()


SEARCH_IN_A_NEW_PROCESS = """
import json, sys
import numpy as np
from imagesearch.stores.local import LocalStore
store = LocalStore(sys.argv[1], index_min_vectors=1_000)
query = np.array(json.loads(sys.argv[2]), np.float32)
print(json.dumps([[h.id, h.score] for h in store.search("clip-like", query, 10)]))
"""


def test_a_saved_snapshot_is_opened_by_a_new_process_which_catches_up_on_later_writes(tmp_path, caplog):
    path = tmp_path / "store.db"
    store, vectors = filled_store(path, 5_000)
    store.refresh()  # what ingest does when it ends
    saved = snapshots(store)
    assert len(saved) == 2 and saved[0].endswith(".json") and saved[1].endswith(".usearch"), saved

    # after the snapshot: new images, replaced vectors, removed images
    query = clip_like(1, seed=96)[0]
    new = np.stack([query] * 2) + 0.01 * unit_vectors(2, DIM, seed=3)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    store.upsert_images([record(5_000), record(5_001)])
    store.set_vectors(MODEL, [image_id(5_000), image_id(5_001)], new)
    best_before = exact_top(vectors, query, 3)
    store.remove_images([best_before[0]])
    replaced = -query  # now the farthest image of all
    store.set_vectors(MODEL, [best_before[1]], replaced[None])
    store.close()

    everything = np.concatenate([vectors, new])
    everything[int(next(i for i in range(5_000) if image_id(i) == best_before[1]))] = replaced
    keep = set(range(5_002)) - {next(i for i in range(5_000) if image_id(i) == best_before[0])}
    expected = exact_top(everything, query, 10, keep=lambda i: i in keep)

    reader = LocalStore(path, index_min_vectors=1_000)
    with caplog.at_level(logging.INFO, logger="imagesearch.stores.local"):
        hits = reader.search(MODEL, query, 10)
    assert "building the vector index" not in caplog.text  # opened from the snapshot
    assert [h.id for h in hits][:2] == [image_id(5_000), image_id(5_001)] or \
        [h.id for h in hits][:2] == [image_id(5_001), image_id(5_000)]
    assert best_before[0] not in {h.id for h in hits} and best_before[1] not in {h.id for h in hits}
    assert len(set(h.id for h in hits) & set(expected)) >= 9

    # the same from a fresh interpreter, as the API would open it
    import json

    out = subprocess.run([sys.executable, "-c", SEARCH_IN_A_NEW_PROCESS, str(path), json.dumps(query.tolist())],
                         capture_output=True, text=True, timeout=120, check=True)
    assert [i for i, _ in json.loads(out.stdout)] == [h.id for h in hits]


def test_snapshots_that_are_broken_half_written_or_for_another_shape_are_rebuilt_from_the_store(tmp_path, caplog):
    path = tmp_path / "store.db"
    store, vectors = filled_store(path, 3_000)
    store.refresh()
    index_file = next(store.index_folder.glob("*.usearch"))
    query = clip_like(1, seed=95)[0]
    expected = [h.id for h in store.search(MODEL, query, 10)]
    store.close()

    # a save killed midway leaves a temporary file (ignored); a newer index without its JSON (ignored)
    (store.index_folder / f"{index_file.name}.tmp-1-2").write_bytes(b"half")
    index_file.write_bytes(b"not an index at all")  # and the complete one is broken
    with caplog.at_level(logging.INFO):
        reopened = LocalStore(path, index_min_vectors=1_000)
        assert [h.id for h in reopened.search(MODEL, query, 10)] == expected
    assert "skipping the vector index snapshot" in caplog.text and "building the vector index" in caplog.text
    reopened.close()


def test_saves_follow_the_writes_and_leave_one_snapshot(tmp_path):
    path = tmp_path / "store.db"
    store, _ = filled_store(path, 1_500)
    store.refresh()
    first = snapshots(store)
    store.upsert_images([record(i) for i in range(1_500, 1_500 + SAVE_EVERY)])
    store.set_vectors(MODEL, [image_id(i) for i in range(1_500, 1_500 + SAVE_EVERY)], clip_like(SAVE_EVERY, seed=4))
    store.search(MODEL, clip_like(1, seed=5)[0], 3)  # a search that catches up on SAVE_EVERY rows saves them
    second = snapshots(store)
    assert len(second) == 2 and second != first  # the older snapshot is gone
    store.refresh()
    assert snapshots(store) == second  # nothing new: nothing written


@pytest.mark.parametrize("vectors_per_image", [4])
def test_several_vectors_per_image_stay_exact(tmp_path, vectors_per_image):
    store = LocalStore(tmp_path / "store.db", index_min_vectors=0)
    store.upsert_images([record(i) for i in range(50)])
    vectors = unit_vectors(50 * vectors_per_image, DIM, seed=6).reshape(50, vectors_per_image, DIM)
    store.set_vectors("blip2-like", [image_id(i) for i in range(50)], vectors)
    query = unit_vectors(1, DIM, seed=7)[0]
    best = (vectors @ query).max(1)
    assert [h.id for h in store.search("blip2-like", query, 5)] == [image_id(int(i)) for i in np.argsort(-best)[:5]]
    store.refresh()
    assert not store.searchers.indexes and snapshots(store) == []


def test_a_snapshot_newer_than_a_database_restored_from_a_backup_is_rebuilt(tmp_path, caplog):
    import shutil

    path = tmp_path / "store.db"
    store, _ = filled_store(path, 1_500)
    store.close()  # the last connection closed: the WAL is folded into the file
    shutil.copy(path, tmp_path / "backup.db")
    store, _ = filled_store(path, 2_000, seed=1)  # the same 1,500 again (new seqs) and 500 more
    store.refresh()
    store.close()
    for leftover in tmp_path.glob("store.db-*"):
        leftover.unlink()
    shutil.copy(tmp_path / "backup.db", path)  # restored: its seqs end before the snapshot's

    restored = LocalStore(path, index_min_vectors=1_000)
    later = clip_like(300, seed=7)  # written after the restore, with seqs the snapshot already "has"
    restored.upsert_images([record(i) for i in range(10_000, 10_300)])
    restored.set_vectors(MODEL, [image_id(i) for i in range(10_000, 10_300)], later)
    with caplog.at_level(logging.WARNING):
        for i in (0, 150, 299):
            assert restored.search(MODEL, later[i], 1)[0].id == image_id(10_000 + i)
    assert "newer than the store" in caplog.text
    restored.close()


def test_the_setting_decides_over_a_saved_snapshot(tmp_path):
    """Raising the threshold (say, for vectors a graph cannot search well) brings exact search back,
    even where an index was saved before."""
    path = tmp_path / "store.db"
    store, vectors = filled_store(path, 1_500)
    store.refresh()
    assert snapshots(store)
    store.close()
    exact = LocalStore(path, index_min_vectors=10**9)
    query = clip_like(1, seed=8)[0]
    assert [h.id for h in exact.search(MODEL, query, 10)] == exact_top(vectors, query, 10)
    assert exact.searchers.matrices and not exact.searchers.indexes
    exact.close()


def test_a_new_index_measures_its_recall_and_warns_when_the_vectors_do_not_suit_a_graph(tmp_path, caplog):
    """CLIP-like vectors: the build logs a recall near 1. Uniformly random 512-d ones, the worst case
    for any graph index: the build says so, and how to get exact search back."""
    with caplog.at_level(logging.INFO, logger="imagesearch.stores.local"):
        store, _ = filled_store(tmp_path / "clip.db", 3_000)
        store.refresh()
    found = re.search(r"recall@10 on 20 of its own vectors: ([\d.]+)", caplog.text)
    assert found and float(found.group(1)) >= 0.95, caplog.text
    assert "too evenly spread" not in caplog.text
    caplog.clear()

    n = 20_000
    spread = LocalStore(tmp_path / "random.db", index_min_vectors=1_000)
    spread.upsert_images([record(i) for i in range(n)])
    spread.set_vectors("random", [image_id(i) for i in range(n)], unit_vectors(n, 512, seed=9))
    with caplog.at_level(logging.INFO, logger="imagesearch.stores.local"):
        spread.refresh()
    found = re.search(r"recall@10 on 20 of its own vectors: ([\d.]+)", caplog.text)
    assert found and float(found.group(1)) < 0.9, caplog.text
    assert (
        "too evenly spread for a graph index" in caplog.text and "IMAGESEARCH_LOCAL_INDEX_MIN_VECTORS above 20000" in caplog.text
    )
