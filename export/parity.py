"""The parity gate: every exported file must give torch's embeddings for a fixed batch of images
and texts (worst cosine at least ``PARITY_MIN`` of its variant), run by the services' own ONNX
Runtime session."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagesearch.encoders import row_cosines
from imagesearch.encoders.onnx import make_session
from imagesearch.export.source import ExportError, Source
from imagesearch.model_card import INPUTS, TOWERS, VARIANT_FILES, Tower
from imagesearch.tokenizer import Tokenizer

log = logging.getLogger(__name__)

PARITY_TEXTS = [
    "a photo of a dog running on a beach",
    "a red circle",
    "A city skyline at NIGHT, with lights!",
    "naïve café ☕ — 東京",
    "",
    "a very long caption " * 20,
]


@dataclass
class ParityBatch:
    """The fixed inputs of each tower and torch's outputs for them."""

    inputs: dict[Tower, np.ndarray]
    references: dict[Tower, np.ndarray]


def parity_images(batch: int, size: int) -> np.ndarray:
    """A fixed, varied uint8 batch: noise, gradients, flat colours."""
    rng = np.random.default_rng(1234)
    images = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    if batch > 1:
        images[1] = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)], -1).astype(np.uint8)
    if batch > 2:
        images[2] = np.array([200, 30, 40], np.uint8)
    return images


def parity_batch(source: Source, images: int, tokenizer: Tokenizer | None) -> ParityBatch:
    """``images`` parity images and ``PARITY_TEXTS`` tokenized by the model's tokenizer (random token
    ids where it has none), with torch's embeddings of them."""
    pixels = parity_images(images, source.image_size)
    if tokenizer is not None:
        tokens = tokenizer(PARITY_TEXTS)
    else:
        rng = np.random.default_rng(7)
        tokens = rng.integers(1, source.vocab_size - 1, size=(len(PARITY_TEXTS), source.context_length), dtype=np.int64)
    with torch.no_grad():
        references: dict[Tower, np.ndarray] = {"visual": source.visual(torch.from_numpy(pixels)).numpy(),
                                               "textual": source.textual(torch.from_numpy(tokens)).numpy()}
    return ParityBatch(inputs={"visual": pixels, "textual": tokens}, references=references)


def save_reference(batch: ParityBatch, path: Path) -> None:
    """The parity batch and torch's outputs, so a service can check the file it loads (on any CPU)."""
    # Any: numpy's stub would check each array against savez's own keyword (allow_pickle: bool).
    arrays: dict[str, Any] = {INPUTS[tower][0]: batch.inputs[tower] for tower in TOWERS}
    arrays |= {tower: batch.references[tower] for tower in TOWERS}  # torch's outputs, under the towers' names
    np.savez_compressed(path, **arrays)


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    session = make_session(path, variant="fp16" if path.name == VARIANT_FILES["fp16"] else "fp32")
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def check_parity(onnx_path: Path, reference: np.ndarray, batch: np.ndarray, minimum: float, what: str) -> float:
    """Worst cosine between ONNX and the reference over every embedding (each of an image's several
    for BLIP-2); raises ExportError below ``minimum``."""
    worst = float(row_cosines(run_onnx(onnx_path, batch), reference).min())
    log.info("parity %s: worst cosine %.7f (need >= %s)", what, worst, minimum)
    if not worst >= minimum:
        raise ExportError(f"parity check failed for {what}: worst cosine {worst:.7f} < {minimum}")
    return worst
