"""Elasticsearch store benchmark: bulk indexing rate, kNN latency and recall@k, heap and disk per vector.

    .venv/bin/python -m bench.bench_es                      # 100k x 512-d, on a test node it starts itself
    .venv/bin/python -m bench.bench_es --n 20000 --types int8_hnsw --num-candidates 20,50,100
    .venv/bin/python -m bench.bench_es --url http://localhost:9200 --n 1000000 --data random

Vectors and queries are "clustered" (shaped like CLIP embeddings) or "random" unit vectors (the
hardest case for HNSW, and misleading for CLIP), see ``bench.common.bench_vectors``; recall@k is
against exact brute force. Every figure goes through the store's real code path (set_vectors,
search with the record lookup). The local store (exact search) runs on the same data for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_vectors, cpu_description, elasticsearch, save_results
from imagesearch.config import Settings
from imagesearch.records import ImageRecord
from imagesearch.stores.elasticsearch import ElasticsearchStore

MiB = 1024 * 1024


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    scores = np.concatenate([queries @ data[s : s + 200_000].T for s in range(0, len(data), 200_000)], axis=1)
    return [set(np.argpartition(-row, k)[:k].tolist()) for row in scores]


def records(n: int) -> list[ImageRecord]:
    return [ImageRecord(id=hashlib.sha256(f"bench-{i}".encode()).hexdigest(), urls=[f"https://example.com/{i}.jpg"],
                        sources=["url"], width=640, height=480, format="jpeg", bytes=50_000) for i in range(n)]


def timed_searches(store, model: str, queries: np.ndarray, k: int, index_of: dict[str, int], truth: list[set[int]]) -> dict:
    for q in queries[:10]:  # warm-up
        store.search(model, q, k)
    latencies, recalls = [], []
    for q, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        hits = store.search(model, q, k)
        latencies.append((time.perf_counter() - started) * 1000)
        recalls.append(len({index_of[h.id] for h in hits} & expected) / k)
    return {"p50_ms": np.percentile(latencies, 50), "p99_ms": np.percentile(latencies, 99), "recall": float(np.mean(recalls))}


def index_stats(store: ElasticsearchStore, model: str) -> dict:
    stats = store.es.indices.stats(index=store.indices.aliases(model)[0]).body["_all"]["primaries"]
    return {"disk": stats["store"]["size_in_bytes"], "off_heap": stats.get("dense_vector", {}).get("off_heap", {}),
            "segments": stats["segments"]["count"]}


def heap_used(store: ElasticsearchStore) -> int:
    nodes = store.es.nodes.stats(metric="jvm").body["nodes"]
    return sum(n["jvm"]["mem"]["heap_used_in_bytes"] for n in nodes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--data", default="clustered", choices=["clustered", "random"], help="vectors and queries")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--types", default="int8_hnsw,hnsw,bbq_hnsw", help="index_options types to compare")
    parser.add_argument("--num-candidates", default="50,100,200", help="values to measure recall/latency at")
    parser.add_argument("--m", type=int, default=Settings().es_hnsw_m, help="HNSW graph degree")
    parser.add_argument("--ef-construction", type=int, default=Settings().es_hnsw_ef_construction)
    parser.add_argument("--batch", type=int, default=500, help="vectors per set_vectors call")
    parser.add_argument("--url", help="an Elasticsearch to use (default: start a test node)")
    parser.add_argument("--heap", default="1g", help="heap of the test node")
    parser.add_argument("--no-local", action="store_true", help="skip the local store comparison")
    parser.add_argument("--force-merge", action="store_true",
                        help="merge each vector index into one segment before searching (one graph: the lowest recall)")
    args = parser.parse_args()

    with elasticsearch(args.url, args.heap) as args.url:
        run(args)


def run(args) -> None:
    data, queries = bench_vectors(args.data, args.n, args.dim, seed=7), bench_vectors(args.data, args.queries, args.dim, seed=8)
    recs = records(args.n)
    ids = [r.id for r in recs]
    index_of = {image_id: i for i, image_id in enumerate(ids)}
    truth = exact_top_k(data, queries, args.k)
    candidates = [int(x) for x in args.num_candidates.split(",")]
    prefix = f"bench{int(time.time())}"
    base = Settings(store="elasticsearch", es_url=args.url, es_index_prefix=prefix, es_hnsw_m=args.m,
                    es_hnsw_ef_construction=args.ef_construction)
    print(f"CPU: {cpu_description()}")
    print(f"{args.n} {args.data} unit vectors x {args.dim}-d, {args.queries} {args.data} queries, k={args.k}, "
          f"m={args.m}, ef_construction={args.ef_construction}, {args.url}\n")

    meta = ElasticsearchStore(base)
    started = time.perf_counter()
    for start in range(0, args.n, 1000):
        meta.upsert_images(recs[start : start + 1000])
    print(f"metadata upsert_images: {args.n / (time.perf_counter() - started):,.0f} docs/s")

    rows, figures = [], []
    for index_type in args.types.split(","):
        store = ElasticsearchStore(base.model_copy(update={"es_index_type": index_type}))
        model = f"bench-{index_type}"
        store.ensure_model(model, args.dim)
        heap_before = heap_used(store)
        started = time.perf_counter()
        for start in range(0, args.n, args.batch):
            store.set_vectors(model, ids[start : start + args.batch], data[start : start + args.batch])
        store.refresh()
        rate = args.n / (time.perf_counter() - started)
        if args.force_merge:
            merge_started = time.perf_counter()
            store.es.options(request_timeout=7200).indices.forcemerge(index=store.indices.aliases(model)[0], max_num_segments=1)
            print(f"{index_type}: force merge to one segment {time.perf_counter() - merge_started:,.0f} s", flush=True)
        stats = index_stats(store, model)
        heap_delta = heap_used(store) - heap_before
        print(
            f"{index_type}: set_vectors {rate:,.0f} docs/s; disk {stats['disk'] / MiB:,.0f} MiB "
            f"({stats['segments']} segments); "
            f"off-heap vector files {stats['off_heap'].get('total_size_bytes', 0) / MiB:,.0f} MiB "
            f"{ {k: round(v / MiB) for k, v in stats['off_heap'].items() if k != 'total_size_bytes' and v} }; "
            f"heap after - before indexing {heap_delta / MiB:+,.0f} MiB",
            flush=True,
        )
        per_million = 1_000_000 / args.n
        for nc in candidates:
            searcher = ElasticsearchStore(base.model_copy(update={"es_num_candidates": nc}))
            result = timed_searches(searcher, model, queries, args.k, index_of, truth)
            rows.append(
                (
                    index_type,
                    nc,
                    result,
                    rate,
                    stats["disk"] * per_million,
                    stats["off_heap"].get("total_size_bytes", 0) * per_million,
                )
            )
            print(
                f"  num_candidates {nc:>5}: recall@{args.k} {result['recall']:.3f}  "
                f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms",
                flush=True,
            )
            figures.append({"store": "elasticsearch", "index": index_type, "segments": stats["segments"], "num_candidates": nc,
                            "indexing_docs_s": rate, "recall_at_10": result["recall"], "p50_ms": float(result["p50_ms"]),
                            "p99_ms": float(result["p99_ms"]), "disk_per_1m_gib": stats["disk"] * per_million / 2**30,
                            "vector_files_per_1m_gib": stats["off_heap"].get("total_size_bytes", 0) * per_million / 2**30})
            searcher.close()
        store.close()

    local = None
    if not args.no_local:
        try:
            from imagesearch.config import LOCAL_INDEX_MIN_VECTORS as INDEX_MIN_VECTORS
            from imagesearch.stores.local import LocalStore
        except ImportError:
            print("\n(no local store to compare with)")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                store = LocalStore(Path(tmp) / "store.sqlite3")
                store.upsert_images(recs)
                store.ensure_model("bench", args.dim)
                started = time.perf_counter()
                for start in range(0, args.n, args.batch):
                    store.set_vectors("bench", ids[start : start + args.batch], data[start : start + args.batch])
                rate = args.n / (time.perf_counter() - started)
                local = (
                    rate,
                    timed_searches(store, "bench", queries, args.k, index_of, truth),
                    (Path(tmp) / "store.sqlite3").stat().st_size,
                )
                store.close()

    print(
        f"\n| store | index | num_candidates | set_vectors docs/s | recall@{args.k} | p50 ms | p99 ms "
        "| disk per 1M (extrapolated) | vector files per 1M (extrapolated) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for index_type, nc, result, rate, disk, off_heap in rows:
        print(
            f"| elasticsearch | {index_type} | {nc} | {rate:,.0f} | {result['recall']:.3f} | {result['p50_ms']:.1f} "
            f"| {result['p99_ms']:.1f} "
            f"| {disk / 2**30:.2f} GiB | {off_heap / 2**30:.2f} GiB |"
        )
    if local:
        rate, result, size = local
        # past INDEX_MIN_VECTORS the local store answers from its graph index, below from the exact matrix
        kind = "graph (usearch int8, rescored)" if args.n >= INDEX_MIN_VECTORS else "exact (float32 matrix)"
        print(f"| local | {kind} | - | {rate:,.0f} | {result['recall']:.3f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} "
              f"| {size * 1_000_000 / args.n / 2**30:.2f} GiB (whole db) | - |")
        figures.append({"store": "local", "index": kind, "indexing_docs_s": rate, "recall_at_10": result["recall"],
                        "p50_ms": float(result["p50_ms"]), "p99_ms": float(result["p99_ms"]),
                        "disk_per_1m_gib": size * 1_000_000 / args.n / 2**30})
    save_results("bench_es", figures, parameters={"vectors": args.n, "dim": args.dim, "data": args.data, "k": args.k,
                                                  "m": args.m, "ef_construction": args.ef_construction,
                                                  "force_merged": args.force_merge})
    meta.close()


if __name__ == "__main__":
    main()
