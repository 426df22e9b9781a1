"""The embedded store's figures (issues 3 and 13): build time, first query in a new process, query
p50/p99, recall@10 against exact search, RAM and disk, at 100k and 1M 512-d unit vectors, through
the graph index (the default past ``INDEX_MIN_VECTORS``) and exact (the float32 matrix), side by side.

    .venv/bin/python -m bench.bench_store [--sizes 100000,1000000] [--data clustered,random]

"clustered" vectors are shaped like CLIP image embeddings (bench.common.bench_vectors); "random"
ones are the worst case for any graph index. Each reader is a fresh process, as the API would be:
its first query includes opening the store and loading the index (or the matrix).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_vectors, cpu_description, latencies_ms, p50, pct, save_results
from imagesearch.config import LOCAL_INDEX_MIN_VECTORS as INDEX_MIN_VECTORS
from imagesearch.records import ImageRecord
from imagesearch.stores.local import LocalStore

DIM, MODEL, QUERIES = 512, "bench", 200
EXACT = 10**12  # index_min_vectors that keeps a store exact


def ids_for(start: int, n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + n)]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(path: Path, vectors: np.ndarray) -> tuple[float, float]:
    """Write the records and vectors as ingest does, then refresh (the index, past the threshold).
    Returns (seconds writing, seconds building and saving the index)."""
    store = LocalStore(path)
    store.ensure_model(MODEL, DIM)
    started = time.perf_counter()
    for start in range(0, len(vectors), 20_000):
        ids = ids_for(start, min(20_000, len(vectors) - start))
        store.upsert_images([ImageRecord(id=i, urls=[f"http://example.com/{i[:12]}.jpg"], sources=["url"],
                                         width=640, height=480, format="jpeg", bytes=1000) for i in ids])
        store.set_vectors(MODEL, ids, vectors[start : start + len(ids)])
    written = time.perf_counter()
    store.refresh()
    store.close()
    return written - started, time.perf_counter() - written


def serve(path: Path, index_min_vectors: int) -> dict:
    """In a fresh process: open the store, first query, p50/p99, recall@10, RAM grown."""
    queries, truth = np.load(path.with_name("queries.npy")), json.loads(path.with_name("truth.json").read_text())
    before = rss_mib()
    started = time.perf_counter()
    store = LocalStore(path, index_min_vectors=index_min_vectors)
    store.search(MODEL, queries[0], 10)
    first_s = time.perf_counter() - started
    lat = latencies_ms(lambda i: store.search(MODEL, queries[i % len(queries)], 10), QUERIES)
    recall = np.mean([len({h.id for h in store.search(MODEL, q, 10)} & set(truth[i])) / 10 for i, q in enumerate(queries)])
    return {"first_query_s": first_s, "p50_ms": p50(lat), "p99_ms": pct(lat, 99), "recall": float(recall),
            "rss_mib": rss_mib() - before}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--data", default="clustered")
    parser.add_argument("--serve", nargs=2, metavar=("PATH", "INDEX_MIN_VECTORS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:  # the child: one reader
        print(json.dumps(serve(Path(args.serve[0]), int(args.serve[1]))))
        return

    print(f"CPU: {cpu_description()}; {DIM}-d vectors; graph index from {INDEX_MIN_VECTORS:,} vectors on")
    print(f"{'n':>9} {'data':<9} {'search':<6} {'write':>7} {'index':>7} {'disk':>9} {'first query':>11} "
          f"{'p50':>8} {'p99':>8} {'recall@10':>9} {'RAM':>9}")
    figures = []
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in args.data.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
                path = Path(tmp) / "store.sqlite3"
                vectors = bench_vectors(kind, n, DIM, seed=n)
                queries = bench_vectors(kind, QUERIES, DIM, seed=1)
                all_ids = ids_for(0, n)
                scores = np.concatenate([queries @ vectors[s : s + 200_000].T for s in range(0, n, 200_000)], axis=1)
                truth = [[all_ids[i] for i in np.argsort(-row)[:10]] for row in scores]
                del scores
                np.save(path.with_name("queries.npy"), queries)
                path.with_name("truth.json").write_text(json.dumps(truth))
                write_s, index_s = build(path, vectors)
                del vectors
                disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file() and "store.sqlite3" in str(p))
                for name, threshold in (("index", INDEX_MIN_VECTORS), ("exact", EXACT)):
                    if name == "index" and n < INDEX_MIN_VECTORS:
                        continue  # exact is what the store does at this size
                    done = subprocess.run([sys.executable, "-m", "bench.bench_store", "--serve", str(path), str(threshold)],
                                          capture_output=True, text=True)
                    if done.returncode != 0:
                        raise RuntimeError(done.stderr[-3000:])
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    print(f"{n:>9,} {kind:<9} {name:<6} {write_s:6.1f}s {index_s:6.1f}s {disk / 2**20:7,.0f}Mi "
                          f"{r['first_query_s']:10.2f}s {r['p50_ms']:6.2f}ms {r['p99_ms']:6.2f}ms {r['recall']:9.3f} "
                          f"{r['rss_mib']:7,.0f}Mi", flush=True)
                    figures.append({"vectors": n, "data": kind, "search": "graph index" if name == "index" else "exact",
                                    "write_s": write_s, "index_s": index_s, "disk_mib": round(disk / 2**20),
                                    "first_query_s": r["first_query_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                                    "recall_at_10": r["recall"], "ram_mib": round(r["rss_mib"])})
    save_results("bench_store", figures, parameters={"dim": DIM, "graph_index_from": INDEX_MIN_VECTORS})


if __name__ == "__main__":
    main()
