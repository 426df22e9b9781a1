"""Issue 3 figures for the embedded store: build time, query p50/p99, recall@10 vs exact brute force,
memory and disk, at 100k and 1M random 512-d unit vectors.

    .venv/bin/python -m bench.bench_store [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_vectors, latencies_ms, p50, pct
from imagesearch.records import ImageRecord
from imagesearch.stores.local import LocalStore

DIM = 512


def unit_vectors(n: int, seed: int) -> np.ndarray:
    return bench_vectors("random", n, DIM, seed)


def ids_for(start: int, n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + n)]


def bench_size(n: int, root: Path) -> None:
    store = LocalStore(root / f"store-{n}.sqlite3")
    store.ensure_model("bench", DIM)
    vectors = unit_vectors(n, seed=n)
    started = time.perf_counter()
    for start in range(0, n, 20_000):
        ids = ids_for(start, min(20_000, n - start))
        store.upsert_images([ImageRecord(id=i, urls=[f"http://example.com/{i[:12]}.jpg"], sources=["url"],
                                         width=640, height=480, format="jpeg", bytes=1000) for i in ids])
        store.set_vectors("bench", ids, vectors[start : start + len(ids)])
    build_s = time.perf_counter() - started

    reader = LocalStore(root / f"store-{n}.sqlite3")  # a fresh reader, like the API process
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    reader.search("bench", vectors[0], 10)
    load_s = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    queries = unit_vectors(200, seed=1)
    lat = latencies_ms(lambda i: reader.search("bench", queries[i % len(queries)], 10), 200)
    all_ids = ids_for(0, n)
    recall = []
    for q in queries[:50]:
        exact = {all_ids[i] for i in np.argsort(-(vectors @ q))[:10]}
        got = {h.id for h in reader.search("bench", q, 10)}
        recall.append(len(exact & got) / 10)
    disk = sum(p.stat().st_size for p in root.glob(f"store-{n}.sqlite3*"))
    print(f"local store, {n:>9,} x {DIM}-d: build {build_s:6.1f}s ({n / build_s:,.0f} vectors/s incl. records) | "
          f"first-query load {load_s:5.1f}s | query p50 {p50(lat):6.1f} ms p99 {pct(lat, 99):6.1f} ms | "
          f"recall@10 {np.mean(recall):.3f} | reader RSS +{(rss_after - rss_before) / 1024:,.0f} MiB | "
          f"disk {disk / 2**20:,.0f} MiB ({disk / n * 1e6 / 2**30:.2f} GiB per 1M)")
    store.close()
    reader.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            bench_size(n, Path(tmp))


if __name__ == "__main__":
    main()
