"""`make bench`: every benchmark in turn, each in its own process (figures are printed, not asserted)."""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = ["bench_encoders", "bench_int8", "bench_ingest", "bench_clip_retrieval", "bench_store", "bench_downloader", "bench_api", "bench_hybrid", "bench_triton", "bench_es", "bench_blip2"]


def main() -> int:
    failed, took = [], {}
    for name in BENCHMARKS:
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
    sys.exit(main())
