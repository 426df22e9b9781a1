"""Issues 3 and 13 figures: end-to-end ingest img/s from a folder and from a URL list (a local
server) of 1024x768 JPEGs, against the raw encoder's img/s at the same batch size, in one run.
Target: >= 90% of the raw encoder; the scan's (or download's) hashing and verifying must overlap
the encoder. "one after the other" is the stages run in sequence, as `imagesearch ingest` did
before it overlapped them; the other rows are `imagesearch ingest` itself (in this process).

    .venv/bin/python -m bench.bench_ingest [--images 256] [--variant fp32|int8] [--encoder onnx|openvino]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import cpu_description, photo_jpegs, rate, vit_b32_repository
from imagesearch.config import Settings, get_settings
from imagesearch.encoders import make_encoder
from imagesearch.stores.local import LocalStore
from ingest import cli
from ingest.embed import EmbedWorker
from ingest.folder import scan_folder
from tests.support.image_server import serve_forever_in_process

SLUG = "vit-b-32-random"


def ingest_command(env: dict[str, str], *arguments: str) -> float:
    """Seconds for `imagesearch ingest ARGUMENTS` in this process, with these settings."""
    os.environ.update(env)
    get_settings.cache_clear()
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = cli.run(parser.parse_args(list(arguments)))
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"ingest failed: {printed.getvalue()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--encoder", default="onnx", choices=["onnx", "openvino"])
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    repo = vit_b32_repository()
    jpegs = photo_jpegs(args.images, seed=3)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        for i, data in enumerate(jpegs):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        settings = Settings(data_dir=tmp / "sequential", model_repository=repo, model=SLUG,
                            model_variant=args.variant, batch_size=args.batch, encoder=args.encoder)
        encoder = make_encoder(settings)
        runtime = {"onnx": "ONNX Runtime", "openvino": f"OpenVINO {encoder.health().get('precision')}"}[args.encoder]
        pixels = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
        raw = rate(lambda: encoder.encode_images(pixels), args.batch, min_seconds=10)

        store = LocalStore(settings.data_dir / "store.sqlite3")
        started = time.perf_counter()
        scan_folder(folder, store, settings)
        scanned = time.perf_counter()
        summary = EmbedWorker(store, encoder, settings).run()
        done = time.perf_counter()
        assert summary.embedded == args.images, summary
        encoder.close()
        store.close()
        rows = [("embed stage alone (decode+resize+encode+write)", args.images / (done - scanned)),
                ("folder, one after the other (scan, then embed)", args.images / (done - started))]

        env = {"IMAGESEARCH_MODEL_REPOSITORY": str(repo), "IMAGESEARCH_MODEL": SLUG, "IMAGESEARCH_MODEL_VARIANT": args.variant,
               "IMAGESEARCH_ENCODER": args.encoder,
               "IMAGESEARCH_BATCH_SIZE": str(args.batch), "IMAGESEARCH_ALLOW_PRIVATE_NETWORKS": "true"}
        seconds = ingest_command({**env, "IMAGESEARCH_DATA_DIR": str(tmp / "folder")}, "--folder", str(folder))
        rows.append(("folder, `imagesearch ingest --folder` (overlapped)", args.images / seconds))

        ctx = mp.get_context("spawn")
        ready, port = ctx.Event(), ctx.Value("i", 0)
        images = {f"/{i:05d}.jpg": data for i, data in enumerate(jpegs)}
        server = ctx.Process(target=serve_forever_in_process, args=(images, ready, port), daemon=True)
        server.start()
        try:
            ready.wait(60)
            urls = tmp / "urls.txt"
            urls.write_text("".join(f"http://127.0.0.1:{port.value}{path}\n" for path in images))
            seconds = ingest_command({**env, "IMAGESEARCH_DATA_DIR": str(tmp / "urls")}, "--urls", str(urls))
            rows.append(("URL list, `imagesearch ingest --urls` (overlapped)", args.images / seconds))
        finally:
            server.terminate()
            server.join(5)

    print(f"{cpu_description()}; ViT-B-32 {args.variant} on {runtime}, batch {args.batch}, {args.images} JPEGs 1024x768")
    print(f"  raw encoder (pre-decoded pixels): {raw:.1f} img/s")
    for name, value in rows:
        print(f"  {name}: {value:.1f} img/s = {value / raw:.0%} of raw")


if __name__ == "__main__":
    main()
