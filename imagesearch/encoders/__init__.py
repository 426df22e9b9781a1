"""The encoder interface: uint8 image batches and texts in, L2-normalized float32 vectors out.

Two implementations, chosen by ``IMAGESEARCH_ENCODER``: ONNX Runtime in-process (``onnx``) and
NVIDIA Triton over gRPC (``triton``). Nothing above this interface knows which one it talks to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

from imagesearch.config import Settings
from imagesearch.model_card import ModelCard, load_card

if TYPE_CHECKING:
    from imagesearch.tokenizer import Tokenizer


class EncoderUnavailable(RuntimeError):
    """The encoder backend cannot answer (server down, model missing). Safe to retry later."""


@runtime_checkable
class Encoder(Protocol):
    card: ModelCard

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] RGB at the model's size -> float32 [B, D], L2-normalized."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 [B, D], L2-normalized."""

    def health(self) -> dict:
        """{"ok": bool, ...details}; never raises."""

    def close(self) -> None: ...


class TowerEncoder:
    """What both implementations share: input checks and tokenization; ``_run(tower, batch)`` is theirs."""

    card: ModelCard
    tokenizer: "Tokenizer"

    def _run(self, tower: str, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        size = self.card.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [B,{size},{size},3], got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.card.dim), np.float32)
        return self._run("visual", pixels)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.card.dim), np.float32)
        return self._run("textual", self.tokenizer(texts))


def make_encoder(settings: Settings, card: ModelCard | None = None) -> Encoder:
    card = card or load_card(settings.model_repository, settings.model)
    if settings.encoder == "triton":
        from imagesearch.encoders.triton import TritonEncoder

        return TritonEncoder(card, settings)
    from imagesearch.encoders.onnx import OnnxEncoder

    return OnnxEncoder(card, settings)
