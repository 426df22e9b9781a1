"""Issue 13 target 1: `imagesearch ingest --folder` against clip-retrieval's `inference`, side by side
in one run: the same CPU, the same JPEGs (1024x768, in a folder), the same model (open_clip ViT-B-32,
random weights), batch 32. Target: this project >= 2.0x clip-retrieval's steady img/s at
fp32-equivalent quality (cosine >= 0.999 to fp32 open_clip on the export's reference batch).

clip-retrieval (2.45.0, its latest) runs from its own CLI in its own virtual environment under the
bench cache. That environment sees this project's .venv through a .pth file, for torch above all
(the export extra: a CUDA build of several GB, not downloaded twice); what clip-retrieval pins
differently (numpy<2, open_clip_torch<3, ...) is installed into its own environment and wins.

Figures:
- clip-retrieval steady: images / the summed time of its batches (read + inference + write), which
  leaves out its start-up and model load; with start-up: images / the command's wall time.
- this project: images / the time of `imagesearch ingest --folder` (scan, hash, verify, decode,
  encode, store; model load included), run in this process with a fresh data directory.
- quality: the ingest writes image vectors only (it loads the image tower alone), so what counts is
  the images' worst cosine: to the fp32 ingest's vectors of the same images (all of them), and in
  the encoder's load-time reference check (the export's reference batch, to torch fp32). The text
  tower's figure is printed beside it: the API's text queries use it, in the API's own variant.

    .venv/bin/python -m bench.bench_clip_retrieval [--images 512] [--batch 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_ingest import SLUG, ingest_command
from bench.common import CACHE, cpu_description, photo_jpegs, save_results, vit_b32_repository
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder, row_cosines
from imagesearch.stores import make_store

CLIP_RETRIEVAL = "clip-retrieval==2.45.0"
VENV = CACHE / "clip-retrieval-venv"
WEIGHTS = CACHE / "clip-retrieval" / "vit-b-32-random.pt"

# (label, settings): ONNX Runtime fp32 and int8, OpenVINO as it chooses on this CPU and in f32.
OURS = [
    ("ONNX Runtime fp32", {"IMAGESEARCH_ENCODER": "onnx", "IMAGESEARCH_MODEL_VARIANT": "fp32"}),
    ("ONNX Runtime int8", {"IMAGESEARCH_ENCODER": "onnx", "IMAGESEARCH_MODEL_VARIANT": "int8"}),
    (
        "OpenVINO f32",
        {"IMAGESEARCH_ENCODER": "openvino", "IMAGESEARCH_MODEL_VARIANT": "fp32", "IMAGESEARCH_OPENVINO_PRECISION": "f32"},
    ),
    (
        "OpenVINO auto",
        {"IMAGESEARCH_ENCODER": "openvino", "IMAGESEARCH_MODEL_VARIANT": "fp32", "IMAGESEARCH_OPENVINO_PRECISION": "auto"},
    ),
]


def clip_retrieval_venv() -> Path:
    """clip-retrieval's own environment (made once), layered over this project's .venv."""
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "clip-retrieval").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "imagesearch-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        # setuptools<81: the `clip` package it imports still needs pkg_resources.
        subprocess.run([str(python), "-m", "pip", "install", "-q", CLIP_RETRIEVAL, "setuptools<81"], check=True)
    return VENV / "bin" / "clip-retrieval"


def random_weights() -> Path:
    """An open_clip ViT-B-32 checkpoint with random weights (no model hub here), made by the venv's open_clip."""
    if not WEIGHTS.is_file():
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        script = ("import open_clip, torch, sys; torch.manual_seed(0); "
                  "torch.save(open_clip.create_model('ViT-B-32', pretrained=None).state_dict(), sys.argv[1])")
        subprocess.run([str(VENV / "bin" / "python"), "-c", script, str(WEIGHTS) + ".tmp"], check=True)
        os.replace(str(WEIGHTS) + ".tmp", WEIGHTS)
    return WEIGHTS


def run_clip_retrieval(command: Path, folder: Path, output: Path, batch: int) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [str(command), "inference", "--input_dataset", str(folder), "--output_folder", str(output),
         "--input_format", "files", "--enable_text", "False", "--batch_size", str(batch),
         "--num_prepro_workers", str(os.cpu_count()), "--clip_model", f"open_clip:ViT-B-32/{random_weights()}"],
        capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"clip-retrieval failed:\n{done.stderr[-3000:]}")
    stats = json.loads(next((output / "stats").glob("*.json")).read_text())
    return {"images": stats["sample_count"], "batches_s": stats["total_duration"],
            "inference_s": stats["inference_duration"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="clip-retrieval, then each of ours, this many times; medians")
    args = parser.parse_args()
    repo = vit_b32_repository()
    command = clip_retrieval_venv()
    theirs: list[dict] = []
    rates: dict[str, list[tuple[float, float]]] = {}  # row: per round (img/s, ratio to that round's clip-retrieval)
    quality: dict[
        str, tuple[float, float, float, str]
    ] = {}  # row: (images to the fp32 ingest's, reference images, texts, precision)
    with tempfile.TemporaryDirectory(prefix="bench-clip-retrieval-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        for i, data in enumerate(photo_jpegs(args.images, seed=3)):
            (folder / f"{i:05d}.jpg").write_bytes(data)
        env = {"IMAGESEARCH_MODEL_REPOSITORY": str(repo), "IMAGESEARCH_MODEL": SLUG, "IMAGESEARCH_BATCH_SIZE": str(args.batch)}
        fp32_vectors = None
        for round_ in range(args.rounds):
            theirs.append(run_clip_retrieval(command, folder, tmp / f"clip-retrieval-{round_}", args.batch))
            assert theirs[-1]["images"] == args.images, theirs[-1]
            steady = theirs[-1]["images"] / theirs[-1]["batches_s"]
            for i, (label, choice) in enumerate(OURS):
                settings = {**env, **choice, "IMAGESEARCH_DATA_DIR": str(tmp / f"ours-{round_}-{i}")}
                seconds, _, _ = ingest_command(settings, "--folder", str(folder))  # (seconds, CPU seconds, steady img/s)
                rates.setdefault(label, []).append((args.images / seconds, args.images / seconds / steady))
                if round_ == 0:
                    health = make_encoder(Settings()).health()  # the same settings, now in the environment
                    check = health["reference_check"]["worst_cosine"]
                    vectors = stored_vectors(Settings(), folder)
                    assert len(vectors) == args.images, len(vectors)
                    fp32_vectors = vectors if fp32_vectors is None else fp32_vectors  # the first row is ORT fp32
                    ids = sorted(vectors)
                    images = row_cosines(np.stack([vectors[key] for key in ids]), np.stack([fp32_vectors[key] for key in ids]))
                    quality[label] = (
                        float(images.min()),
                        check["visual"],
                        check["textual"],
                        f" ({health['precision']})" if health.get("precision", "") not in ("", *label.split()) else "",
                    )

    median = statistics.median
    print(
        f"{cpu_description()}; open_clip ViT-B-32 random weights, {args.images} JPEGs 1024x768 in a folder, batch {args.batch}, "
        f"{args.rounds} rounds (medians; each ratio to its own round's clip-retrieval)"
    )
    steadies = [t["images"] / t["batches_s"] for t in theirs]
    print(
        f"  clip-retrieval 2.45 inference (torch fp32): steady {median(steadies):.1f} img/s (rounds: "
        f"{', '.join(f'{x:.1f}' for x in steadies)}; model alone {median(t['images'] / t['inference_s'] for t in theirs):.1f}); "
        f"with start-up {median(t['images'] / t['wall_s'] for t in theirs):.1f} img/s "
        f"({median(t['wall_s'] for t in theirs):.1f} s)"
    )
    print("  quality: the ingest's image vectors, worst cosine to the fp32 ingest's (all images) / the reference "
          "check's images and texts (worst cosine to torch fp32); fp32-equivalent: >= 0.999")
    figures = [{"ingest": "clip-retrieval 2.45 inference (torch fp32), steady", "img_s": median(steadies),
                "vs_clip_retrieval": 1.0, "rounds": steadies,
                "with_startup_img_s": median(t["images"] / t["wall_s"] for t in theirs)}]
    for label, runs in rates.items():
        images, visual, textual, precision = quality[label]
        verdict = "fp32-equivalent images" if min(images, visual) >= 0.999 else "images below fp32-equivalent"
        print(f"  imagesearch ingest --folder, {label}{precision}: {median(r[0] for r in runs):.1f} img/s = "
              f"{median(r[1] for r in runs):.2f}x clip-retrieval steady (rounds: {', '.join(f'{r[1]:.2f}x' for r in runs)}); "
              f"images {images:.5f} / {visual:.5f} ({verdict}); texts {textual:.5f}")
        figures.append({"ingest": f"imagesearch ingest --folder, {label}{precision}", "img_s": median(r[0] for r in runs),
                        "vs_clip_retrieval": median(r[1] for r in runs), "rounds": [r[1] for r in runs],
                        "image_cosine_to_fp32_ingest": images, "reference_visual_cosine": visual,
                        "reference_textual_cosine": textual})
    save_results("bench_clip_retrieval", figures, parameters={"model": "open_clip ViT-B-32, random weights",
                                                              "images": args.images, "batch": args.batch, "rounds": args.rounds})


def stored_vectors(settings: Settings, folder: Path) -> dict[str, np.ndarray]:
    """{image id: vector} of every image the ingest stored from ``folder``."""
    store = make_store(settings)
    try:
        return {i: v for i in store.find_ids(folder=str(folder)) if (v := store.get_vector(SLUG, i)) is not None}
    finally:
        store.close()


if __name__ == "__main__":
    main()
