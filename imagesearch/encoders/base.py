"""The encoder contract (``Encoder``), what the implementations share (``TowerEncoder``) and its errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from imagesearch.model_card import INPUTS, PARITY_MIN, TOWERS, ModelCard, Tower

if TYPE_CHECKING:
    from imagesearch.tokenizer import Tokenizer


log = logging.getLogger(__name__)


class EncoderUnavailable(RuntimeError):
    """The encoder backend cannot answer (server down, model missing). Safe to retry later."""


class ReferenceCheckFailed(EncoderUnavailable):
    """The loaded model file does not reproduce its export's reference outputs on this machine."""


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each pair of vectors along the last axis ([B, D] or [B, Q, D]), flattened."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(1)


@runtime_checkable
class Encoder(Protocol):
    card: ModelCard

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] RGB at the model's size -> float32 [B, *card.image_shape()] ([B, D], or
        [B, Q, D] for a model with several vectors per image), L2-normalized."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 [B, D], L2-normalized."""

    def health(self) -> dict:
        """{"ok": bool, ...details}; never raises."""

    def close(self) -> None: ...


class TowerEncoder:
    """What the implementations share: input checks, tokenization and the reference check;
    ``_run(tower, batch)`` is theirs. ``towers``: the towers loaded (the ingest needs no text tower)."""

    card: ModelCard
    tokenizer: Tokenizer
    towers: tuple[Tower, ...] = TOWERS

    def _check_loaded(self, tower: Tower) -> None:
        if tower not in self.towers:
            raise ValueError(f"model {self.card.slug} was loaded without its {tower} tower (towers: {', '.join(self.towers)})")

    def _run(self, tower: Tower, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        size = self.card.image_size
        self._check_loaded("visual")
        if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [B,{size},{size},3], got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, *self.card.image_shape()), np.float32)
        return self._run("visual", pixels)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._check_loaded("textual")
        if len(texts) == 0:
            return np.zeros((0, self.card.dim), np.float32)
        return self._run("textual", self.tokenizer(texts))

    def check_reference(self, repository: Path, variant: str, policy: str, reduced_precision: bool = False) -> dict:
        """Run the export's parity batch through the loaded model and compare with torch's outputs.

        A file can pass its gate where it was exported and fail on another CPU (int8 kernels differ
        by ISA), or be damaged; this says so at start-up instead of serving quietly worse results.
        ``policy``: ``refuse`` raises ``ReferenceCheckFailed`` below the gate or without a reference batch, ``warn`` logs it.
        ``reduced_precision``: the runtime computes an fp32 graph's matrix products in fewer bits (TF32
        or fp16 on a GPU, TensorRT; bf16 in OpenVINO), so the gate is at most fp16's (cosine 0.999).
        """
        path = self.card.reference_path(repository)
        if path is None or not path.is_file():
            message = (f"model {self.card.slug} has no reference batch ({path or 'its card names none'}): the export is "
                       "incomplete. Re-export it (`imagesearch export ...`), or set IMAGESEARCH_REFERENCE_CHECK=warn to serve "
                       "it unchecked.")
            return _verdict({"ok": False, "checked": False, "variant": variant, "detail": message}, message, policy)
        with np.load(path) as data:
            worst = {tower: float(row_cosines(self._run(tower, data[INPUTS[tower][0]]), data[tower]).min())
                     for tower in self.towers}
        minimum = min(PARITY_MIN[variant], PARITY_MIN["fp16"]) if reduced_precision else PARITY_MIN[variant]
        result = {"ok": min(worst.values()) >= minimum, "checked": True, "variant": variant,
                  "worst_cosine": worst, "minimum": minimum}
        if result["ok"]:
            return result
        figures = ", ".join(f"{tower} {value:.5f}" for tower, value in worst.items())
        return _verdict(result, (
            f"model {self.card.slug} ({variant}) does not reproduce its export's reference outputs on this "
            f"machine: worst cosine {figures}, below the gate {minimum}. The file was exported on another "
            f"kind of CPU or is damaged: re-export it here (`imagesearch export ... --{variant}`), use "
            "IMAGESEARCH_MODEL_VARIANT=fp32, or set IMAGESEARCH_REFERENCE_CHECK=warn to serve it anyway."), policy)


def _verdict(result: dict, message: str, policy: str) -> dict:
    """A failed reference check: ``refuse`` raises ``ReferenceCheckFailed``, ``warn`` logs and goes on."""
    if policy == "refuse":
        raise ReferenceCheckFailed(message)
    log.warning(message)
    return result
