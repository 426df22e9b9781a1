"""Helpers shared by the benchmarks: a cached ViT-B-32 (random weights) export, JPEG fixtures, timing,
and ``save_results``, which keeps each run's figures in bench/results/ for the documentation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path(os.environ.get("IMAGESEARCH_BENCH_CACHE", Path.home() / ".cache" / "imagesearch-bench"))
ROOT = Path(__file__).resolve().parents[1]
# Kept in the repository: `make docs` renders every file there into docs/benchmarks.md (tables, plots).
RESULTS = Path(os.environ.get("IMAGESEARCH_BENCH_RESULTS", ROOT / "bench" / "results"))


def vit_b32_repository() -> Path:
    """ViT-B-32 with random weights exported once (fp32 + int8) into the bench cache (again when the
    int8 format changes)."""
    from imagesearch.model_card import INT8_FORMAT, load_card

    repo = CACHE / "vit-b-32-random"
    if not (repo / "vit-b-32-random.json").is_file() or load_card(repo, "vit-b-32-random").int8_format != INT8_FORMAT:
        from imagesearch.export.pipeline import export_model
        from imagesearch.export.source import ExportOptions

        export_model(ExportOptions(model="ViT-B-32", pretrained="none", int8=True), repo)
    return repo


@contextlib.contextmanager
def elasticsearch(url: str | None, heap: str) -> Iterator[str]:
    """``url``, or that of an Elasticsearch test node started here (and stopped after) when None."""
    if url is not None:
        yield url
        return
    from tests.support.es_node import ES_VERSION, start_node

    print(f"starting an Elasticsearch {ES_VERSION} test node (heap {heap}) ...", flush=True)
    node = start_node(heap=heap)
    try:
        yield node.url
    finally:
        node.close()


def cpu_description() -> str:
    """The CPU model and the instruction sets that change ONNX Runtime's kernels (figures differ by ISA)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    isa = "AVX-512 with VNNI" if {"avx512f", "avx512_vnni"} <= flags else "AVX-512 without VNNI" if "avx512f" in flags \
        else "AVX2 only" if "avx2" in flags else "no AVX2"
    # bf16 matrix units: what OpenVINO's `auto` precision computes in (imagesearch/encoders/openvino.py)
    isa += ", AMX bf16" if "amx_bf16" in flags else ", AVX-512 BF16" if "avx512_bf16" in flags else ""
    return f"{model}, {os.cpu_count()} cores, {isa}"


def photo_jpegs(n: int, size=(1024, 768), seed: int = 0) -> list[bytes]:
    """Photo-like 1024x768 JPEGs (smooth gradients + noise), quality 90."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        base = np.stack(
            [(xx / w) * rng.uniform(80, 255), (yy / h) * rng.uniform(80, 255), np.full_like(xx, rng.uniform(0, 255))], -1
        )
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def rate(fn, items: int, min_seconds: float = 3.0, warmup: int = 1) -> float:
    """items/s of fn() (which processes ``items`` items), over at least ``min_seconds``."""
    for _ in range(warmup):
        fn()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        fn()
        runs += 1
    return runs * items / (time.perf_counter() - started)


def latencies_ms(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def p50(values: list[float]) -> float:
    return statistics.median(values)


# --- vectors for the store benchmarks ------------------------------------------------------------

def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def bench_vectors(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors. "random": uniform on the sphere, the worst case for graph indexes (every
    vector about as far from every other). "clustered": shaped like CLIP image embeddings: a shared
    direction, 4,000 clusters in a 64-d subspace and a little noise, so near neighbours are near (a
    new sample's nearest neighbour among 1M sits at cosine ~0.87, the median at ~0.31). The clusters
    are the same for every seed: data and queries drawn with two seeds come from one mixture."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return unit(rng.standard_normal((n, dim), dtype=np.float32))
    if kind != "clustered":
        raise ValueError(f"unknown vector kind {kind!r}: random or clustered")
    shape = np.random.default_rng(99)
    latent_dim = min(64, dim)
    basis = np.linalg.qr(shape.standard_normal((dim, latent_dim)))[0].T.astype(np.float32)
    common = unit(shape.standard_normal((1, dim), dtype=np.float32))
    centres = shape.standard_normal((4000, latent_dim), dtype=np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        rows = min(100_000, n - start)
        latent = centres[rng.integers(0, len(centres), rows)] + 0.5 * rng.standard_normal((rows, latent_dim), dtype=np.float32)
        noise = 0.15 * unit(rng.standard_normal((rows, dim), dtype=np.float32))
        out[start : start + rows] = unit(0.6 * common + 0.1 * latent @ basis + noise)
    return out



# --- results for the documentation ---------------------------------------------------------------

def git_commit() -> str:
    """The checkout's commit, "-dirty" when files differ from it, "unknown" outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if changed else "")


def _rounded(value):
    """Five significant digits: what the printed figures show, without a float's noise."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def save_results(name: str, figures: list[dict], parameters: dict | None = None) -> Path:
    """Write the figures this run printed (one flat dict per table row) to bench/results/ with the CPU,
    the date, the git commit and the command line; `make docs` turns them into the benchmarks page."""
    now = datetime.now(timezone.utc)
    result = {
        "benchmark": name,
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "cpu": cpu_description(),
        "command": " ".join([".venv/bin/python -m", f"bench.{name}", shlex.join(sys.argv[1:])]).strip(),
        "source": "measured",
        "parameters": _rounded(parameters or {}),
        "figures": _rounded(figures),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{now:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return path
