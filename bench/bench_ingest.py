"""Issues 3 and 13 figures: end-to-end ingest img/s from a folder and from a URL list (a local
server) of 1024x768 JPEGs, against the raw encoder's img/s at the same batch size, in one run.
Target: >= 90% of the raw encoder; the scan's (or download's) hashing and verifying must overlap
the encoder. "one after the other" is the stages run in sequence, as `imagesearch ingest` did
before it overlapped them; the other rows are `imagesearch ingest` itself (in this process).

    .venv/bin/python -m bench.bench_ingest [--images 512] [--rounds 2] [--variant fp32|int8] [--encoder onnx|openvino]

"with start-up" is images / the command's wall time (the model's load and reference check
included); "steady" is the embed stage's own rate from the encoder's load on, as the CLI prints
it (the scan or download runs beside it). CPU ms per image is the process's CPU time (all threads)
per image: the machine's speed drifts by 20% from minute to minute, the work per image does not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import cpu_description, photo_jpegs, rate, save_results, vit_b32_repository
from imagesearch.config import Settings, get_settings
from imagesearch.encoders import make_encoder
from imagesearch.ingest import cli
from imagesearch.ingest.embed import EmbedWorker
from imagesearch.ingest.folder import scan_folder
from imagesearch.model_card import TOWERS
from imagesearch.stores.local import LocalStore
from tests.support.image_server import serve_forever_in_process

SLUG = "vit-b-32-random"


def ingest_command(env: dict[str, str], *arguments: str) -> tuple[float, float, float]:
    """`imagesearch ingest ARGUMENTS` in this process, with these settings: its seconds, its CPU
    seconds (all threads) and the embed stage's own img/s (from the encoder's load on). Tagging is off
    unless ``env`` turns it on: the figures are the embedding pipeline's (as clip-retrieval's), and each
    row's fresh data folder would count tagging's one-time pass of the text tower over the vocabulary."""
    os.environ.update({"IMAGESEARCH_TAGGING": "false", **env})
    get_settings.cache_clear()
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = cli.run(parser.parse_args(list(arguments)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if code != 0:
        raise SystemExit(f"ingest failed: {printed.getvalue()}")
    embed_rate = float(re.search(r"embedded in [\d.]+s \(([\d.]+) img/s\)", printed.getvalue()).group(1))
    return seconds, cpu, embed_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--encoder", default="onnx", choices=["onnx", "openvino"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="the raw encoder and each row again; the median ratio is kept")
    args = parser.parse_args()
    repo = vit_b32_repository()
    jpegs = photo_jpegs(args.images, seed=3)
    rows: dict[str, list[tuple[float, float, float, float]]] = {}  # row: per round (img/s, steady img/s, CPU ms/img, raw)
    raws: list[float] = []
    raws_whole: list[float] = []  # ONNX Runtime: each batch in one run on all threads
    loads: dict[tuple, list[float]] = {}  # towers: seconds to load and check the encoder, per round
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        for i, data in enumerate(jpegs):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        env = {"IMAGESEARCH_MODEL_REPOSITORY": str(repo), "IMAGESEARCH_MODEL": SLUG, "IMAGESEARCH_MODEL_VARIANT": args.variant,
               "IMAGESEARCH_ENCODER": args.encoder, "IMAGESEARCH_ONNX_IMAGE_RUNS": "0",  # each row sets what it changes
               "IMAGESEARCH_BATCH_SIZE": str(args.batch), "IMAGESEARCH_ALLOW_PRIVATE_NETWORKS": "true"}
        ctx = mp.get_context("spawn")
        ready, port = ctx.Event(), ctx.Value("i", 0)
        images = {f"/{i:05d}.jpg": data for i, data in enumerate(jpegs)}
        server = ctx.Process(target=serve_forever_in_process, args=(images, ready, port), daemon=True)
        server.start()
        try:
            ready.wait(60)
            urls = tmp / "urls.txt"
            urls.write_text("".join(f"http://127.0.0.1:{port.value}{path}\n" for path in images))
            for round_ in range(args.rounds):
                settings = Settings(data_dir=tmp / f"sequential-{round_}", model_repository=repo, model=SLUG,
                                    model_variant=args.variant, batch_size=args.batch, encoder=args.encoder)
                encoder = make_encoder(settings, towers=("visual",), bulk=True)  # as the ingest runs it
                runtime = {"onnx": f"ONNX Runtime, {encoder.health().get('image_runs')} parts of each batch at once",
                           "openvino": f"OpenVINO {encoder.health().get('precision')}"}[args.encoder]
                pixels = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
                raw = rate(lambda encoder=encoder, pixels=pixels: encoder.encode_images(pixels), args.batch, min_seconds=10)
                raws.append(raw)
                if args.encoder == "onnx":  # the API's way: one run on all threads
                    whole = make_encoder(settings, towers=("visual",))
                    raws_whole.append(rate(lambda e=whole, pixels=pixels: e.encode_images(pixels), args.batch, min_seconds=10))
                    whole.close()
                for towers in (TOWERS, ("visual",)):  # what the ingest saves by not loading the text tower
                    started = time.perf_counter()
                    make_encoder(settings, towers=towers).close()
                    loads.setdefault(towers, []).append(time.perf_counter() - started)

                store = LocalStore(settings.data_dir / "store.sqlite3")
                started, cpu = time.perf_counter(), time.process_time()
                scan_folder(folder, store, settings)
                scanned, scan_cpu = time.perf_counter(), time.process_time()
                summary = EmbedWorker(store, encoder, settings).run()
                done, done_cpu = time.perf_counter(), time.process_time()
                assert summary.embedded == args.images, summary
                encoder.close()
                store.close()
                per_image = 1000 / args.images
                rows.setdefault("embed stage alone (decode+resize+encode+write)", []).append(
                    (args.images / (done - scanned), summary.rate, (done_cpu - scan_cpu) * per_image, raw))
                rows.setdefault("folder, one after the other (scan, then embed)", []).append(
                    (args.images / (done - started), summary.rate, (done_cpu - cpu) * per_image, raw))

                for name, extra, source in [
                    (
                        "folder, `imagesearch ingest --folder`, each image decoded twice (IMAGESEARCH_HANDOFF_MB=0)",
                        {"IMAGESEARCH_HANDOFF_MB": "0"},
                        ("--folder", str(folder)),
                    ),
                    (
                        "folder, `imagesearch ingest --folder` (default: decoded once)",
                        {"IMAGESEARCH_HANDOFF_MB": "256"},
                        ("--folder", str(folder)),
                    ),
                    *(
                        [
                            (
                                "folder, `imagesearch ingest --folder`, each batch in one run on all threads "
                                "(IMAGESEARCH_ONNX_IMAGE_RUNS=1)",
                                {"IMAGESEARCH_HANDOFF_MB": "256", "IMAGESEARCH_ONNX_IMAGE_RUNS": "1"},
                                ("--folder", str(folder)),
                            )
                        ]
                        if args.encoder == "onnx"
                        else []
                    ),
                    (
                        "URL list, `imagesearch ingest --urls`, decoded twice",
                        {"IMAGESEARCH_HANDOFF_MB": "0"},
                        ("--urls", str(urls)),
                    ),
                    (
                        "URL list, `imagesearch ingest --urls` (default: decoded once)",
                        {"IMAGESEARCH_HANDOFF_MB": "256"},
                        ("--urls", str(urls)),
                    ),
                ]:
                    data_dir = tmp / f"{len(rows)}-{round_}"
                    seconds, cpu_s, steady = ingest_command({**env, **extra, "IMAGESEARCH_DATA_DIR": str(data_dir)}, *source)
                    shutil.rmtree(data_dir)
                    rows.setdefault(name, []).append((args.images / seconds, steady, cpu_s * per_image, raw))
        finally:
            server.terminate()
            server.join(5)

    print(f"{cpu_description()}; ViT-B-32 {args.variant} on {runtime}, batch {args.batch}, {args.images} JPEGs 1024x768, "
          f"{args.rounds} rounds (the median of each figure; each ratio to its own round's raw encoder)")
    print(f"  raw encoder (pre-decoded pixels): {statistics.median(raws):.1f} img/s (rounds: "
          f"{', '.join(f'{r:.1f}' for r in raws)})")
    if raws_whole:
        print(f"  raw encoder, each batch in one run on all threads (the API's way): {statistics.median(raws_whole):.1f} img/s "
              f"(rounds: {', '.join(f'{r:.1f}' for r in raws_whole)})")
    print(f"  encoder load with its reference check: both towers {statistics.median(loads[TOWERS]):.2f} s, "
          f"the image tower only (what the ingest loads) {statistics.median(loads[('visual',)]):.2f} s")
    print("  | | img/s with start-up | of raw | embed stage img/s (steady) | of raw | CPU ms per image |")
    figures = [{"row": "raw encoder on pre-decoded pixels", "img_s": statistics.median(raws), "rounds": raws}]
    if raws_whole:
        figures.append({"row": "raw encoder, each batch in one run on all threads (the API's way)",
                        "img_s": statistics.median(raws_whole), "rounds": raws_whole})
    for name, runs in rows.items():
        median = [statistics.median(values) for values in zip(*runs, strict=True)]
        ratio = statistics.median(r[0] / r[3] for r in runs)
        steady_ratio = statistics.median(r[1] / r[3] for r in runs)
        print(f"  | {name} | {median[0]:.1f} | {ratio:.0%} | {median[1]:.1f} | {steady_ratio:.0%} | {median[2]:.0f} |")
        figures.append({"row": name, "img_s": median[0], "of_raw_pct": round(ratio * 100), "steady_img_s": median[1],
                        "steady_of_raw_pct": round(steady_ratio * 100), "cpu_ms_per_image": round(median[2])})
    save_results("bench_ingest", figures, parameters={
        "model": "ViT-B-32, random weights", "variant": args.variant, "encoder": runtime, "batch": args.batch,
        "images": args.images, "rounds": args.rounds, "load_both_towers_s": statistics.median(loads[TOWERS]),
        "load_image_tower_s": statistics.median(loads[("visual",)])})


if __name__ == "__main__":
    main()
