"""Issue 2 and 13 figures: ViT-B-32 (random weights) image encoder img/s at batch 32, torch against
ONNX Runtime (fp32, int8) and OpenVINO (f32, and bf16 where the CPU has it), text latency p50 at
batch 1 with tokenization, preprocessing img/s per core.

    .venv/bin/python -m bench.bench_encoders
"""

from __future__ import annotations

import numpy as np

from bench.common import cpu_description, latencies_ms, p50, photo_jpegs, rate, save_results, vit_b32_repository
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.preprocess import prepare

BATCH = 32


def main() -> None:
    import open_clip
    import torch

    from imagesearch.export.sources.open_clip import TextualTower, VisualTower

    repo = vit_b32_repository()
    print(f"machine: {cpu_description()}; ViT-B-32 random weights; batch {BATCH}")
    fp32 = make_encoder(Settings(model_repository=repo, model="vit-b-32-random"))
    int8 = make_encoder(Settings(model_repository=repo, model="vit-b-32-random", model_variant="int8"))
    openvino = {precision: make_encoder(Settings(model_repository=repo, model="vit-b-32-random", encoder="openvino",
                                                 openvino_precision=precision)) for precision in ("f32", "auto")}
    card = fp32.card
    pixels = np.random.default_rng(0).integers(0, 256, (BATCH, 224, 224, 3), dtype=np.uint8)

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    visual, textual = VisualTower(model, card.mean, card.std).eval(), TextualTower(model).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    batch_tensor = torch.from_numpy(pixels)

    with torch.inference_mode():
        torch_img = rate(lambda: visual(batch_tensor), BATCH, min_seconds=8)
        torch_text = latencies_ms(lambda i: textual(tokenizer([f"a photo of thing number {i}"])), 60)
    ort_img = rate(lambda: fp32.encode_images(pixels), BATCH, min_seconds=8)
    int8_img = rate(lambda: int8.encode_images(pixels), BATCH, min_seconds=8)
    ort_text = latencies_ms(lambda i: fp32.encode_texts([f"a photo of thing number {i}"]), 60)
    int8_text = latencies_ms(lambda i: int8.encode_texts([f"a photo of thing number {i}"]), 60)
    ov_img = {encoder.health()["precision"]: rate(lambda e=encoder: e.encode_images(pixels), BATCH, min_seconds=8)
              for encoder in openvino.values()}
    ov_text = {
        encoder.health()["precision"]: latencies_ms(lambda i, e=encoder: e.encode_texts([f"a photo of thing number {i}"]), 60)
        for encoder in openvino.values()
    }
    tokenize = latencies_ms(lambda i: fp32.tokenizer([f"a photo of thing number {i}"]), 500)

    print(f"image encoder img/s @ batch {BATCH}: torch eager {torch_img:.1f} | ONNX Runtime fp32 {ort_img:.1f} "
          f"({ort_img / torch_img:.2f}x torch) | ONNX Runtime int8 {int8_img:.1f} ({int8_img / ort_img:.2f}x fp32)")
    print("OpenVINO: " + " | ".join(f"{precision} {value:.1f} img/s ({value / ort_img:.2f}x ONNX Runtime fp32), text p50 "
                                    f"{p50(ov_text[precision]):.1f} ms" for precision, value in ov_img.items()))
    print(f"text encoder p50 ms @ batch 1 (tokenize included): torch {p50(torch_text):.1f} | ONNX Runtime fp32 "
          f"{p50(ort_text):.1f} | int8 {p50(int8_text):.1f}; tokenization alone {p50(tokenize):.3f} ms")

    jpegs = photo_jpegs(16)
    torch.set_num_threads(1)
    plain = rate(lambda: [prepare(d, card, draft=False) for d in jpegs], len(jpegs), min_seconds=4)
    draft = rate(lambda: [prepare(d, card, draft=True) for d in jpegs], len(jpegs), min_seconds=4)
    print(f"preprocess 1024x768 JPEG -> 224, one core: Pillow {plain:.0f} img/s | Pillow + draft {draft:.0f} img/s "
          f"({draft / plain:.2f}x)")
    save_results("bench_encoders", [
        {"runtime": "torch eager", "precision": "fp32", "img_s": torch_img, "text_p50_ms": p50(torch_text)},
        {"runtime": "ONNX Runtime", "precision": "fp32", "img_s": ort_img, "text_p50_ms": p50(ort_text)},
        {"runtime": "ONNX Runtime", "precision": "int8", "img_s": int8_img, "text_p50_ms": p50(int8_text)},
        *({"runtime": "OpenVINO", "precision": precision, "img_s": value, "text_p50_ms": p50(ov_text[precision])}
          for precision, value in ov_img.items()),
        {"runtime": "tokenization alone", "text_p50_ms": p50(tokenize)},
        {"runtime": "decode + resize a 1024x768 JPEG to 224, one core: Pillow", "preprocess_img_s": plain},
        {"runtime": "decode + resize a 1024x768 JPEG to 224, one core: Pillow with JPEG draft", "preprocess_img_s": draft},
    ], parameters={"model": "ViT-B-32, random weights", "batch": BATCH})


if __name__ == "__main__":
    main()
