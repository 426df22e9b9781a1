"""Issue 5 figures: image encoding img/s through Triton vs in-process ONNX Runtime (same run, same
batch), and text query latency p50/p99 through Triton at 1 and 16 concurrent clients.

    .venv/bin/python -m bench.bench_triton [--test-model] [--images 128] [--batch 32]

Triton is the real ``tritonserver`` from the nvidia-pytriton wheel serving the Python-backend twin
of the repository (tests/support/triton_server.py): it runs the same ONNX file with ONNX Runtime,
so the difference to in-process is the server's overhead (gRPC, copies, batching, Python backend).
The twin's ONNX Runtime uses as many threads as the in-process encoder (all cores). Text queries
are all different, so Triton's response cache never answers them. Default model: ViT-B-32 with
random weights (exported once into the bench cache); ``--test-model``: the tiny test model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import pct, save_results, vit_b32_repository
from imagesearch.config import Settings
from imagesearch.encoders.onnx import OnnxEncoder
from imagesearch.encoders.triton import TritonEncoder
from imagesearch.model_card import load_card
from tests.support.triton_server import TritonServer
from tests.support.triton_twin import make_python_twin


def images_per_second(encode, pixels: np.ndarray, batch: int, in_flight: int, rounds: int = 2) -> float:
    """img/s encoding ``pixels`` in batches of ``batch`` with ``in_flight`` batches at a time (best round)."""
    batches = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
    best = 0.0
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        list(pool.map(encode, batches[:in_flight]))  # warm up
        for _ in range(rounds):
            started = time.perf_counter()
            list(pool.map(encode, batches))
            best = max(best, len(pixels) / (time.perf_counter() - started))
    return best


def query_latencies_ms(encoder, clients: int, queries: int, run: str) -> list[float]:
    def one(i: int) -> float:
        started = time.perf_counter()
        encoder.encode_texts([f"a photo of a dog number {i} running on the {run} beach"])  # never cached
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(-clients, 0)))  # warm up, distinct from the measured queries
        return list(pool.map(one, range(queries)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-model", action="store_true", help="use the tiny test model instead of ViT-B-32")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    if args.test_model:
        from tests.support.test_model import ensure_test_model

        repo, slug = ensure_test_model(), "shapes-tiny"
    else:
        repo, slug = vit_b32_repository(), "vit-b-32-random"
    card = load_card(repo, slug)
    cores = os.cpu_count() or 1
    # Generous deadline: with several batches in flight on 2 cores a request may queue for long.
    settings = Settings(model_repository=repo, model=slug, batch_size=args.batch, encoder="triton", triton_timeout_s=600)
    pixels = np.random.default_rng(0).integers(0, 256, (args.images, card.image_size, card.image_size, 3), dtype=np.uint8)
    print(f"machine: {cores} cores; model {slug} ({card.image_size}px, dim {card.dim}); batch {args.batch}; {args.images} images")

    local = OnnxEncoder(card, settings)
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        work = Path(tmp)
        server = TritonServer(make_python_twin(repo, work / "model_repository", onnx_threads=cores), work)
        server.start()
        try:
            remote = TritonEncoder(card, settings.model_copy(update={"triton_url": server.grpc_url}))
            print("image encoding (img/s, higher is better):")
            in_process = images_per_second(local.encode_images, pixels, args.batch, 1)
            print(f"  in-process ONNX Runtime            {in_process:8.1f}")
            figures = [{"path": "in-process ONNX Runtime", "batches_in_flight": 1, "img_s": in_process}]
            for in_flight in (1, 2, 4):
                rate = images_per_second(remote.encode_images, pixels, args.batch, in_flight)
                print(f"  Triton, {in_flight} batch(es) in flight       {rate:8.1f}")
                figures.append({"path": "Triton", "batches_in_flight": in_flight, "img_s": rate})
            print(f"text query latency (ms, batch 1, {args.queries} distinct queries):")
            local_ms = query_latencies_ms(local, 1, args.queries, "local")
            print(f"  in-process ONNX Runtime, 1 client  p50 {pct(local_ms, 50):7.2f}  p99 {pct(local_ms, 99):7.2f}")
            figures.append({"path": "in-process ONNX Runtime", "clients": 1, "text_p50_ms": pct(local_ms, 50),
                            "text_p99_ms": pct(local_ms, 99)})
            for clients in (1, 16):
                ms = query_latencies_ms(remote, clients, args.queries, f"{clients}-clients")
                print(f"  Triton, {clients:2d} concurrent client(s)  p50 {pct(ms, 50):7.2f}  p99 {pct(ms, 99):7.2f}")
                figures.append({"path": "Triton", "clients": clients, "text_p50_ms": pct(ms, 50), "text_p99_ms": pct(ms, 99)})
            stats = server.inference_stats(card.textual_name)["batch_stats"]
            sizes = {int(s["batch_size"]): int(s["compute_infer"]["count"]) for s in stats}
            cache = server.inference_stats(card.textual_name)["inference_stats"]["cache_hit"]["count"]
            print(f"  Triton text model executions by batch size: {dict(sorted(sizes.items()))}; cache hits {cache}")
            save_results("bench_triton", figures, parameters={
                "model": slug, "batch": args.batch, "images": args.images, "largest_text_batch": max(sizes, default=0)})
            remote.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
