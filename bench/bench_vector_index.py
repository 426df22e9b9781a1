"""Issue 13, target 3: which vector index should the local store use at 1M images? Candidates, each
measured the way the API would use it: a fresh process opens the saved index, answers its first
query, then 200 queries of top-10 (the index's top ``--rescore`` candidates rescored with their exact
float32 vectors read from SQLite, as the store keeps them). Recall@10 is against exact float32 search.

    .venv/bin/python -m bench.bench_vector_index [--n 1000000] [--data random,clustered]

The two kinds of vectors ("random", "clustered": CLIP-like) are described in
``bench.common.bench_vectors``; queries are new samples of the same kind. Needs the bench extra
(usearch, faiss-cpu).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_vectors, cpu_description, latencies_ms, p50, pct, save_results

DIM = 512
QUERIES = 200
CANDIDATES = ("exact-f32", "faiss-sq8-flat", "usearch-hnsw-i8", "usearch-hnsw-f16", "faiss-hnsw-sq8")


def dataset(kind: str, n: int, seed: int) -> np.ndarray:
    return bench_vectors(kind, n, DIM, seed)


def queries_for(kind: str, seed: int) -> np.ndarray:
    return bench_vectors(kind, QUERIES, DIM, seed)


def exact_top10(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = np.concatenate([queries @ data[s : s + 200_000].T for s in range(0, len(data), 200_000)], axis=1)
    return np.argsort(-scores, axis=1)[:, :10]


def write_sqlite(path: Path, data: np.ndarray) -> None:
    """The float32 vectors by rowid, as the store keeps them (one BLOB per image)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE vectors (rowid INTEGER PRIMARY KEY, vector BLOB NOT NULL)")
    for start in range(0, len(data), 50_000):
        db.executemany("INSERT INTO vectors VALUES (?, ?)",
                       ((start + i, v.tobytes()) for i, v in enumerate(data[start : start + 50_000])))
        db.commit()
    db.close()


# --- the candidates: build (and save), open, search ---------------------------------------------

def i8_scale(data: np.ndarray) -> float:
    """usearch's i8 keeps round(127 x): unit 512-d vectors have tiny components, so they are scaled
    first (a common factor changes no ranking); the rare component beyond it is clipped."""
    return float(1.0 / np.quantile(np.abs(data[:100_000]), 0.9999))


def build(name: str, data: np.ndarray, folder: Path) -> dict:
    started = time.perf_counter()
    extra: dict = {}
    if name == "exact-f32":
        np.save(folder / "f32.npy", data)
    elif name.startswith("usearch"):
        from usearch.index import Index

        dtype = name.rsplit("-", 1)[1]
        scale = i8_scale(data) if dtype == "i8" else 1.0
        index = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
        keys = np.arange(len(data), dtype=np.uint64)
        for start in range(0, len(data), 100_000):
            index.add(keys[start : start + 100_000], np.clip(data[start : start + 100_000] * scale, -1, 1))
        index.save(str(folder / f"{name}.usearch"))
        extra["scale"] = scale
    else:
        import faiss

        if name == "faiss-sq8-flat":
            index = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 128
        index.train(data[:100_000])
        index.add(data)
        faiss.write_index(index, str(folder / f"{name}.faiss"))
    return {"build_s": time.perf_counter() - started, **extra}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serve(name: str, folder: Path, rescore: int, ef: int, built: dict) -> dict:
    """In a fresh process: open, first query, p50 over the queries, recall@10, RAM."""
    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    db = sqlite3.connect(folder / "vectors.sqlite3")
    before = rss_mib()
    started = time.perf_counter()
    if name == "exact-f32":
        matrix = np.load(folder / "f32.npy")

        def search(q: np.ndarray) -> list[int]:
            scores = matrix @ q
            top = np.argpartition(-scores, 9)[:10]
            return [int(i) for i in top[np.argsort(-scores[top])]]
    else:
        if name.startswith("usearch"):
            from usearch.index import Index

            index = Index.restore(str(folder / f"{name}.usearch"), view=True)  # memory-mapped
            index.expansion_search = max(ef, rescore)
            scale = built["scale"]

            def candidates(q: np.ndarray) -> np.ndarray:
                return index.search(np.clip(q * scale, -1, 1), rescore).keys
        else:
            import faiss

            index = faiss.read_index(str(folder / f"{name}.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            if name == "faiss-hnsw-sq8":
                index.hnsw.efSearch = max(ef, rescore)

            def candidates(q: np.ndarray) -> np.ndarray:
                return index.search(q[None, :], rescore)[1][0]

        def search(q: np.ndarray) -> list[int]:
            keys = [int(k) for k in candidates(q) if k >= 0]
            rows = db.execute(f"SELECT rowid, vector FROM vectors WHERE rowid IN ({','.join('?' * len(keys))})", keys)
            found = dict(rows.fetchall())
            ids = list(found)
            exact = np.frombuffer(b"".join(found[i] for i in ids), np.float32).reshape(len(ids), DIM) @ q
            return [ids[i] for i in np.argsort(-exact)[:10]]

    search(queries[0])
    first_s = time.perf_counter() - started
    lat = latencies_ms(lambda i: search(queries[i % len(queries)]), len(queries))
    recall = np.mean([len(set(search(q)) & set(truth[i].tolist())) / 10 for i, q in enumerate(queries)])
    return {"first_query_s": first_s, "p50_ms": p50(lat), "p99_ms": pct(lat, 99), "recall": float(recall),
            "rss_mib": rss_mib() - before}


def run_child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.bench_vector_index", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--data", default="random,clustered")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--rescore", type=int, default=40, help="candidates rescored exactly per query")
    parser.add_argument("--ef", type=int, default=128, help="HNSW search breadth (expansion_search / efSearch)")
    parser.add_argument("--child", nargs=3, metavar=("ACTION", "NAME", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--built", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one build or one serve, in its own process (its RAM is its own)
        action, name, folder = args.child
        if action == "build":
            result = build(name, np.load(Path(folder) / "data.npy", mmap_mode="r"), Path(folder))
        else:
            result = serve(name, Path(folder), args.rescore, args.ef, json.loads(args.built))
        print(json.dumps(result))
        return

    print(f"CPU: {cpu_description()}; {args.n:,} x {DIM}-d vectors; top-10 from {args.rescore} candidates "
          f"rescored exactly; HNSW ef {args.ef}")
    print(f"{'data':<10} {'index':<17} {'build':>8} {'disk':>9} {'first query':>12} {'p50':>8} {'p99':>8} "
          f"{'recall@10':>9} {'RAM':>9}")
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-vindex-") as tmp:
        for kind in args.data.split(","):
            folder = Path(tmp) / kind
            folder.mkdir()
            data = dataset(kind, args.n, seed=3)
            queries = queries_for(kind, seed=4)
            np.save(folder / "data.npy", data)
            np.save(folder / "queries.npy", queries)
            np.save(folder / "truth.npy", exact_top10(data, queries))
            write_sqlite(folder / "vectors.sqlite3", data)
            del data
            for name in args.candidates.split(","):
                before = {p.name for p in folder.iterdir()}
                built = run_child(["--child", "build", name, str(folder)])
                disk = sum(p.stat().st_size for p in folder.iterdir() if p.name not in before)
                served = run_child(["--child", "serve", name, str(folder), "--rescore", str(args.rescore), "--ef", str(args.ef),
                                    "--built", json.dumps(built)])
                print(f"{kind:<10} {name:<17} {built['build_s']:7.1f}s {disk / 2**20:7,.0f}Mi "
                      f"{served['first_query_s']:11.2f}s {served['p50_ms']:6.2f}ms {served['p99_ms']:6.2f}ms "
                      f"{served['recall']:9.3f} {served['rss_mib']:7,.0f}Mi", flush=True)
                figures.append({"data": kind, "index": name, "build_s": built["build_s"], "disk_mib": round(disk / 2**20),
                                "first_query_s": served["first_query_s"], "p50_ms": served["p50_ms"],
                                "p99_ms": served["p99_ms"], "recall_at_10": served["recall"],
                                "ram_mib": round(served["rss_mib"])})
    save_results("bench_vector_index", figures, parameters={"vectors": args.n, "dim": DIM, "rescore": args.rescore,
                                                            "ef": args.ef})


if __name__ == "__main__":
    main()
