"""The multilingual CLIP's cost: ``xlm-roberta-base-ViT-B-32`` (open_clip's ViT-B/32 with an XLM-RoBERTa
base text tower) at the real size with random weights, beside ViT-B-32 measured in the same run.

    .venv/bin/python -m bench.bench_multilingual [--batch 32]

No model hub here: XLM-RoBERTa base's configuration is written locally at its real size (12 layers of
768, 12 heads, 250,002 tokens, 514 positions) with the tests' small multilingual tokenizer (the
vocabulary size only sets the embedding table's size), and exported through ``imagesearch export
--text-model`` (fp32 + int8, parity checked; wall time and the process's peak RAM). Then both models'
encoders are timed with ONNX Runtime: images per second at one batch, and a query's text latency.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, cpu_description, latencies_ms, p50, rate, save_results, vit_b32_repository
from imagesearch.config import Settings

ARCH = "xlm-roberta-base-ViT-B-32"
SLUG = "xlm-roberta-base-vit-b-32-random"
XLM_ROBERTA_BASE = {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1,
                    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
TEXTS = ["a photo of a dog on a beach", "ein Hund am Strand", "浜辺の犬の写真", "собака на пляже", "كلب على الشاطئ"]


def text_model_folder(folder: Path) -> Path:
    """XLM-RoBERTa base's configuration (no weights) and a small multilingual tokenizer."""
    from tests.support.multilingual import build_text_model

    if not (folder / "config.json").is_file():
        build_text_model(folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | XLM_ROBERTA_BASE, indent=2))
    return folder


def export(repository: Path) -> list[dict]:
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions

    started = time.perf_counter()
    card = export_model(
        ExportOptions(model=ARCH, pretrained="none", text_model=text_model_folder(CACHE / "xlm-roberta-base-config"), int8=True),
        repository,
        triton_kind="KIND_CPU",
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"export {ARCH} (fp32 + int8, parity checked): {time.perf_counter() - started:.0f} s, peak RAM {peak:.1f} GiB")
    sizes = {p.relative_to(repository).as_posix(): p.stat().st_size for p in repository.rglob("model*.onnx*")}
    print("files: " + ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in sorted(sizes.items()) if size > 2**20))
    print("parity (worst cosine against open_clip): " + ", ".join(f"{k} {v:.7f}" for k, v in card.parity.items()))
    rows = [{"row": f"export {ARCH}, fp32 + int8 (parity checked)", "seconds": time.perf_counter() - started,
             "peak_ram_gib": peak}]
    for key, cosine in card.parity.items():  # e.g. textual_int8: the tower's file in that variant
        tower, variant = key.split("_")
        files = [size for name, size in sizes.items() if f"_{tower}/" in name and (".int8." in name) == (variant == "int8")]
        rows.append({"row": f"{ARCH} {tower} tower, {variant}", "file_mib": sum(files) / 2**20,
                     "parity_worst_cosine": f"{cosine:.7f}"})  # a string: the figures' rounding would hide the digits
    return rows


def encoders(repository: Path, batch: int) -> list[dict]:
    from imagesearch.encoders import make_encoder

    rng = np.random.default_rng(0)
    rows = []
    for name, folder, slug in (("ViT-B-32", vit_b32_repository(), "vit-b-32-random"), (ARCH, repository, SLUG)):
        for variant in ("fp32", "int8"):
            encoder = make_encoder(Settings(model_repository=folder, model=slug, model_variant=variant, batch_size=batch))
            size = encoder.card.image_size
            pixels = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
            img_s = rate(lambda e=encoder, p=pixels: e.encode_images(p), batch, min_seconds=5)
            text = latencies_ms(lambda i, e=encoder: e.encode_texts([TEXTS[i % len(TEXTS)]]), 40)
            tokenize = latencies_ms(lambda i, e=encoder: e.tokenizer([TEXTS[i % len(TEXTS)]]), 200)
            print(f"{name:26s} {variant}: {img_s:6.1f} img/s at batch {batch} | text p50 {p50(text):6.1f} ms "
                  f"(tokenization {p50(tokenize):.2f} ms) | reference check {encoder.health()['reference_check'].get('ok')}")
            rows.append({"row": f"{name} encoders, {variant}", "img_s": img_s, "text_p50_ms": p50(text),
                         "tokenization_p50_ms": p50(tokenize)})
            encoder.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-multilingual-", dir=CACHE) as tmp:
        exported = export(Path(tmp))
        timed = encoders(Path(tmp), args.batch)
    save_results("bench_multilingual", exported + timed, parameters={"batch": args.batch, "weights": "random"})


if __name__ == "__main__":
    main()
