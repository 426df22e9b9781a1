"""Issue 3 figure: end-to-end ingest img/s from a folder of 1024x768 JPEGs vs the raw encoder img/s at
the same batch size, in the same run (decode/resize must overlap with encoding: target >= 90%).

    .venv/bin/python -m bench.bench_ingest [--images 256] [--variant fp32|int8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import photo_jpegs, rate, vit_b32_repository
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.stores.local import LocalStore
from ingest.embed import EmbedWorker
from ingest.folder import scan_folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    repo = vit_b32_repository()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        for i, data in enumerate(photo_jpegs(args.images, seed=3)):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        settings = Settings(data_dir=tmp / "var", model_repository=repo, model="vit-b-32-random",
                            model_variant=args.variant, batch_size=args.batch)
        encoder = make_encoder(settings)
        pixels = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
        raw = rate(lambda: encoder.encode_images(pixels), args.batch, min_seconds=10)

        store = LocalStore(settings.data_dir / "store.sqlite3")
        started = time.perf_counter()
        scan_folder(folder, store, settings)
        scanned = time.perf_counter()
        summary = EmbedWorker(store, encoder, settings).run()
        done = time.perf_counter()
        assert summary.embedded == args.images, summary
        embed_rate = args.images / (done - scanned)
        e2e_rate = args.images / (done - started)
        print(f"ViT-B-32 {args.variant}, batch {args.batch}, {args.images} JPEGs 1024x768:")
        print(f"  raw encoder (pre-decoded pixels): {raw:.1f} img/s")
        print(f"  embed stage (decode+resize+encode+write): {embed_rate:.1f} img/s = {embed_rate / raw:.0%} of raw")
        print(f"  end to end (scan+hash+store + embed): {e2e_rate:.1f} img/s = {e2e_rate / raw:.0%} of raw")


if __name__ == "__main__":
    main()
