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
    "ein roter Kreis auf einem Foto",
    "赤い丸の写真",
    "Фотография собаки на пляже",
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
        images[1] = np.stack(
            [ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)], -1
        ).astype(np.uint8)
    if batch > 2:
        images[2] = np.array([200, 30, 40], np.uint8)
    return images


def parity_tokens(source: Source, tokenizer: Tokenizer | None) -> np.ndarray:
    """``PARITY_TEXTS`` tokenized by the exported tokenizer, which must give the family's own ids; random
    token ids where it has none (padded as a tokenizer pads them, for a tower that masks its padding)."""
    if tokenizer is not None:
        tokens = tokenizer(PARITY_TEXTS)
        if source.tokenize is not None:
            expected = source.tokenize(PARITY_TEXTS)
            wrong = [text for text, ours, theirs in zip(PARITY_TEXTS, tokens.tolist(), expected.tolist(), strict=True)
                     if ours != theirs]
            if wrong:
                raise ExportError(f"the exported tokenizer gives other token ids than {source.family}'s own for {wrong[0]!r}")
        return tokens
    rng = np.random.default_rng(7)
    tokens = rng.integers(1, source.vocab_size - 1, size=(len(PARITY_TEXTS), source.context_length), dtype=np.int64)
    if source.pad_id is not None:
        tokens[tokens == source.pad_id] = source.pad_id + 1
        for row, length in enumerate(rng.integers(2, source.context_length + 1, size=len(PARITY_TEXTS))):
            tokens[row, length:] = source.pad_id
    return tokens


def parity_batch(source: Source, images: int, tokenizer: Tokenizer | None) -> ParityBatch:
    """``images`` parity images and ``PARITY_TEXTS``' tokens (``parity_tokens``), with torch's embeddings of them."""
    pixels = parity_images(images, source.image_size)
    tokens = parity_tokens(source, tokenizer)
    with torch.no_grad():
        visual = source.visual(torch.from_numpy(pixels)).numpy()
        try:
            textual = source.textual(torch.from_numpy(tokens)).numpy()
        except (RuntimeError, IndexError) as exc:
            raise ExportError(f"{source.family}'s own text encoder fails on the parity tokens ({tokens.shape[0]} texts "
                              f"of {source.context_length} tokens): {type(exc).__name__}: {exc}") from exc
    return ParityBatch(inputs={"visual": pixels, "textual": tokens}, references={"visual": visual, "textual": textual})


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
