"""What keyword and hybrid search add to a query (issue 15): the store's part of a query at 100k
images with captions, in the local store. The text encoder's time is the same in every mode (one
encoding of the query), so it is left out; the API adds the same on top of each.

    .venv/bin/python -m bench.bench_hybrid [--size 100000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from bench.bench_store import DIM, ids_for
from bench.common import bench_vectors, cpu_description, latencies_ms, p50, pct, save_results
from imagesearch.records import ImageRecord
from imagesearch.search import fuse
from imagesearch.stores.local import LocalStore


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    """Made-up words; captions draw them with Zipf's law (word r is used ~1/r as often), as real text does."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return list(dict.fromkeys("".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(size)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    n = parser.parse_args().size
    rng = random.Random(1)
    words = vocabulary(rng)
    weights = [1 / rank for rank in range(1, len(words) + 1)]

    def some(n: int) -> str:
        return " ".join(rng.choices(words, weights, k=n))
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "store.sqlite3")
        # CLIP-like vectors, as the store's graph index expects (random ones defeat any graph index)
        vectors = bench_vectors("clustered", n, DIM, seed=1)
        for start in range(0, n, 20_000):
            ids = ids_for(start, min(20_000, n - start))
            store.upsert_images([ImageRecord(id=i, urls=[f"https://example.com/{some(1)}-{j}.jpg"],
                                             captions=[some(5)], width=640, height=480,
                                             format="jpeg", bytes=1000) for j, i in enumerate(ids)])
            store.set_vectors("bench", ids, vectors[start : start + len(ids)])
        # each mode gets its own 200 queries: a repeated query vector skips the graph walk
        queries = list(zip(bench_vectors("clustered", 601, DIM, seed=100), [some(3) for _ in range(601)], strict=True))
        store.search("bench", queries[0][0], 10)  # load the matrix or the graph index
        it = iter(queries[1:])

        def vector(_: int) -> None:
            store.search("bench", next(it)[0], 10)

        def text(_: int) -> None:
            store.keyword_search(next(it)[1], 10)

        def hybrid(_: int) -> None:
            v, words = next(it)
            fuse(store.search("bench", v, 50), store.keyword_search(words, 50), 10)

        print(
            f"CPU: {cpu_description()}; {n} images with 5-word captions (Zipf over 5000 words), {DIM}-d vectors, "
            "k=10 (hybrid: 50 + 50 fused)"
        )
        figures = {name: latencies_ms(fn, 200) for name, fn in (("vector", vector), ("text", text), ("hybrid", hybrid))}
        for name, values in figures.items():
            print(f"{name:>7}: p50 {p50(values):6.1f} ms  p99 {pct(values, 99):6.1f} ms")
        print(f"hybrid adds {p50(figures['hybrid']) - p50(figures['vector']):.1f} ms at p50 to a vector query's store time")
        save_results("bench_hybrid", [{"mode": name, "p50_ms": p50(values), "p99_ms": pct(values, 99)}
                                      for name, values in figures.items()],
                     parameters={"images": n, "store": "local", "k": 10})


if __name__ == "__main__":
    main()
