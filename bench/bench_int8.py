"""Why the int8 format is what it is: speed and accuracy of four dynamic-quantization formats of the
same ViT-B-32 (random weights) on this CPU, against fp32, in one run.

    .venv/bin/python -m bench.bench_int8

Accuracy is the worst per-row cosine to the fp32 graph on the export's parity batch (images and
texts). It depends on the CPU's instruction sets, not only on the file: run it under
``qemu-x86_64 -cpu Haswell .venv/bin/python -m bench.bench_int8 --accuracy-only`` for an AVX2-only CPU
(emulated: its accuracy figures are real, its timings are not, so it prints none).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.common import cpu_description, latencies_ms, p50, rate, save_results, vit_b32_repository
from imagesearch.encoders import row_cosines
from imagesearch.model_card import INPUTS, INT8_OPS, TOWERS, load_card

BATCH = 32
# name -> quantize_dynamic arguments; the first is the export's format (imagesearch.model_card.INT8_FORMAT)
FORMATS = {
    "int8 weights, 7-bit range, per channel (the export's)": dict(weight_type="QInt8", reduce_range=True, ops=INT8_OPS),
    "the same, with the patch convolution quantized too": dict(weight_type="QInt8", reduce_range=True, ops=None),
    "int8 weights, full range, per channel (before)": dict(weight_type="QInt8", reduce_range=False, ops=None),
    "uint8 weights, per channel": dict(weight_type="QUInt8", reduce_range=False, ops=None),
}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accuracy-only", action="store_true", help="no timings (for an emulated CPU)")
    args = parser.parse_args()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    repo = vit_b32_repository()
    card = load_card(repo, "vit-b-32-random")
    with np.load(card.reference_path(repo)) as data:
        inputs = {tower: data[INPUTS[tower][0]] for tower in TOWERS}
    fp32 = {tower: card.onnx_path(repo, tower) for tower in TOWERS}
    pixels = np.random.default_rng(0).integers(0, 256, (BATCH, card.image_size, card.image_size, 3), dtype=np.uint8)
    print(f"machine: {cpu_description()}; ViT-B-32 random weights; img/s at batch {BATCH}, text p50 at batch 1")

    rows: list[dict] = []

    def measure(label: str, files: dict[str, Path]) -> None:
        sessions = {tower: _session(path) for tower, path in files.items()}
        worst = {t: float(row_cosines(_run(sessions[t], x), _run(_session(fp32[t]), x)).min()) for t, x in inputs.items()}
        line = f"{label:55s} cosine to fp32: visual {worst['visual']:.5f} textual {worst['textual']:.5f}"
        rows.append({"format": label, "visual_cosine": worst["visual"], "textual_cosine": worst["textual"]})
        if not args.accuracy_only:
            images = rate(lambda: _run(sessions["visual"], pixels), BATCH, min_seconds=8)
            text = latencies_ms(lambda i: _run(sessions["textual"], inputs["textual"][i % len(inputs["textual"])][None]), 40)
            line += f" | {images:6.1f} img/s | text p50 {p50(text):5.1f} ms"
            rows[-1].update(img_s=images, text_p50_ms=p50(text))
        print(line, flush=True)

    measure("fp32", fp32)
    with tempfile.TemporaryDirectory() as tmp:
        for label, kwargs in FORMATS.items():
            files = {}
            for tower, src in fp32.items():
                files[tower] = Path(tmp) / f"{tower}-{len(files)}.onnx"
                ops = list(kwargs["ops"]) if kwargs["ops"] else None  # None: every op ONNX Runtime can quantize
                quantize_dynamic(str(src), str(files[tower]), weight_type=getattr(QuantType, kwargs["weight_type"]),
                                 per_channel=True, reduce_range=kwargs["reduce_range"], op_types_to_quantize=ops)
            measure(label, files)
    save_results("bench_int8", rows, parameters={"model": "ViT-B-32, random weights", "batch": BATCH,
                                                 "accuracy_only": args.accuracy_only})


if __name__ == "__main__":
    main()
