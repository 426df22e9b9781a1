"""Near-duplicates (issue 31): how long `imagesearch duplicates` takes to group 100k images in the
local store, through its graph index and exactly, how many of the pairs the graph index finds, and
what `collapse=true` adds to a search.

    .venv/bin/python -m bench.bench_duplicates [--size 100000] [--skip-exact]

The vectors are CLIP-like (bench.common.bench_vectors("clustered"), 512-d) with planted near-copies:
4% of the images are originals with one to three copies each, at a cosine of 0.955 to 0.995 (what
re-encoding, resizing and slight crops give with a trained CLIP). Each grouping runs in a fresh store
object, as `imagesearch duplicates` would: its time includes opening the graph index's snapshot (or
loading the exact matrix). The exact grouping is the reference the graph index's pairs are counted
against.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.bench_store import DIM, EXACT, MODEL, ids_for
from bench.common import bench_vectors, cpu_description, latencies_ms, p50, pct, save_results, unit
from imagesearch.config import Settings
from imagesearch.records import ImageRecord
from imagesearch.search import SearchService
from imagesearch.stores.local import LocalStore

QUERIES = 200  # per case, each query vector new (the graph index keeps the candidates of repeated ones)
ORIGINALS = 0.04  # of the images: originals with planted copies


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors, and for each the row of its original (itself for images that are not copies)."""
    rng = np.random.default_rng(seed)
    copies_each = rng.choice([1, 2, 3], size=int(n * ORIGINALS), p=[0.5, 0.3, 0.2])
    copies = int(copies_each.sum())
    vectors = bench_vectors("clustered", n, DIM, seed=seed)
    originals = rng.choice(n - copies, size=len(copies_each), replace=False)
    source = np.arange(n)
    source[n - copies :] = np.repeat(originals, copies_each)
    base = vectors[source[n - copies :]]
    other = unit(rng.standard_normal((copies, DIM), dtype=np.float32))
    other = unit(other - np.sum(other * base, axis=1, keepdims=True) * base)  # orthogonal to the original
    cosine = rng.uniform(0.955, 0.995, (copies, 1)).astype(np.float32)
    vectors[n - copies :] = unit(cosine * base + np.sqrt(1 - cosine**2) * other)
    return vectors, source


def build(path: Path, vectors: np.ndarray) -> None:
    store = LocalStore(path)
    for start in range(0, len(vectors), 20_000):
        ids = ids_for(start, min(20_000, len(vectors) - start))
        store.upsert_images([ImageRecord(id=i, urls=[f"https://example.com/{i[:12]}.jpg"], sources=["url"], width=640,
                                         height=480, format="jpeg", bytes=100_000) for i in ids])
        store.set_vectors(MODEL, ids, vectors[start : start + len(ids)])
    store.refresh()  # builds and saves the graph index (past its threshold)
    store.close()


def service_over(path: Path, index_min_vectors: int) -> tuple[SearchService, LocalStore]:
    store = LocalStore(path, index_min_vectors=index_min_vectors)
    encoder = SimpleNamespace(card=SimpleNamespace(slug=MODEL), close=lambda: None)  # query vectors are given
    return SearchService(Settings(data_dir=path.parent), encoder=encoder, store=store), store


def group_rows(path: Path, index_min_vectors: int, source: np.ndarray, search: str) -> tuple[dict, set]:
    service, store = service_over(path, index_min_vectors)
    started = time.perf_counter()
    found = service.duplicates()
    seconds = time.perf_counter() - started
    store.close()
    ids = ids_for(0, len(source))
    group_of = {image_id: number for number, group in enumerate(found.groups) for image_id in group.ids}
    copies = np.flatnonzero(source != np.arange(len(source)))
    together = sum(group_of.get(ids[c], -1) == group_of.get(ids[source[c]], -2) for c in copies)
    row = {
        "search": search,
        "seconds": seconds,
        "groups": len(found.groups),
        "images_in_groups": sum(len(g.ids) for g in found.groups),
        "copies_with_their_original_pct": 100 * together / len(copies),
    }
    print(f"  {search:<12} {seconds:7.1f} s  {row['groups']} groups, {row['images_in_groups']} images; "
          f"planted copies grouped with their original: {row['copies_with_their_original_pct']:.2f}%", flush=True)
    return row, {frozenset(g.ids) for g in found.groups}


def collapse_rows(path: Path, index_min_vectors: int, vectors: np.ndarray, source: np.ndarray, search: str) -> list[dict]:
    """Search latency (the store's part, k=10) without and with collapse, for queries near planted copies."""
    service, store = service_over(path, index_min_vectors)
    rng = np.random.default_rng(7)
    near_copies = vectors[rng.choice(np.unique(source[source != np.arange(len(source))]), QUERIES * 4 + 1)]
    queries = iter(unit(near_copies + 0.02 * rng.standard_normal(near_copies.shape, dtype=np.float32)))
    service.search_vector(next(queries), {}, 10)  # open the matrix or the graph index
    rows = []
    for sort in ("relevance", "newest"):
        found: dict[bool, list[float]] = {False: [], True: []}
        for i in range(QUERIES):  # interleaved, each first in turn: a busy moment of the machine weighs on both alike
            for collapse in (False, True) if i % 2 else (True, False):
                found[collapse] += latencies_ms(lambda _, c=collapse, s=sort: service.search_vector(
                    next(queries), {}, 10, sort=s, collapse=c), 1)
        for collapse, values in found.items():
            added = p50(values) - p50(found[False])
            rows.append({"search": search, "sort": sort, "collapse": collapse, "p50_ms": p50(values),
                         "p99_ms": pct(values, 99), "added_p50_ms": added})
            print(f"  {search:<12} sort {sort:<9} collapse {collapse!s:<5}  p50 {p50(values):6.1f} ms  "
                  f"p99 {pct(values, 99):6.1f} ms  added {added:+6.1f} ms", flush=True)
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--skip-exact", action="store_true", help="only the graph index")
    args = parser.parse_args()
    n = args.size
    threshold = Settings().duplicate_threshold
    print(f"CPU: {cpu_description()}; {n} images, {DIM}-d CLIP-like vectors, {ORIGINALS:.0%} of them with 1-3 planted "
          f"copies; threshold {threshold}", flush=True)
    vectors, source = planted(n, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite3"
        started = time.perf_counter()
        build(path, vectors)
        print(f"store and graph index built in {time.perf_counter() - started:.0f} s\n\nduplicates:", flush=True)
        graph_row, graph_groups = group_rows(path, 0, source, "graph index")
        rows.append(graph_row)
        if not args.skip_exact:
            exact_row, exact_groups = group_rows(path, EXACT, source, "exact")
            rows.append(exact_row)
            graph_row["groups_as_exact_pct"] = 100 * len(graph_groups & exact_groups) / max(1, len(exact_groups))
            print(f"  of the exact groups, the graph index found {graph_row['groups_as_exact_pct']:.2f}% exactly")
        print("\ncollapse:")
        rows += collapse_rows(path, 0, vectors, source, "graph index")
        if not args.skip_exact:
            rows += collapse_rows(path, EXACT, vectors, source, "exact")
    save_results("bench_duplicates", rows, parameters={"images": n, "store": "local", "dim": DIM, "threshold": threshold,
                                                        "neighbours": Settings().duplicate_neighbours, "k": 10,
                                                        "sort_window": Settings().sort_window})


if __name__ == "__main__":
    main()
