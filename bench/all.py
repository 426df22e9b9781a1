"""`make bench`: every benchmark in turn, each in its own process (figures are printed, not asserted).

    .venv/bin/python -m bench.all [bench_es bench_blip2 ...]    # or: make bench ONLY="bench_es bench_blip2"

Names given run alone, in the order of ``BENCHMARKS``; none given runs them all.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = ["bench_encoders", "bench_int8", "bench_ingest", "bench_clip_retrieval", "bench_store", "bench_downloader",
              "bench_api", "bench_hybrid", "bench_photo_filters", "bench_duplicates", "bench_negative_weight",
              "bench_multilingual", "bench_triton", "bench_es", "bench_blip2", "bench_ray"]


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from: {', '.join(BENCHMARKS)}")
        return 2
    failed, took = [], {}
    for name in [name for name in BENCHMARKS if not names or name in names]:
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.monotonic()
        if subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0:
            failed.append(name)
        took[name] = time.monotonic() - started
        print(f"=== bench.{name}: {took[name] / 60:.1f} min", flush=True)
    print("\nminutes per benchmark: " + ", ".join(f"{name} {s / 60:.1f}" for name, s in took.items()))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
