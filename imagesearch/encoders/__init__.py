"""The encoder interface: uint8 image batches and texts in, L2-normalized float32 vectors out.

Two implementations, chosen by ``IMAGESEARCH_ENCODER``: ONNX Runtime in-process (``onnx``) and
NVIDIA Triton over gRPC (``triton``). Nothing above this interface knows which one it talks to.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from imagesearch.config import Settings
from imagesearch.model_card import ModelCard, load_card


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


def make_encoder(settings: Settings, card: ModelCard | None = None) -> Encoder:
    card = card or load_card(settings.model_repository, settings.model)
    if settings.encoder == "triton":
        from imagesearch.encoders.triton import TritonEncoder

        return TritonEncoder(card, settings)
    from imagesearch.encoders.onnx import OnnxEncoder

    return OnnxEncoder(card, settings)
