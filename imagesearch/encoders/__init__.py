"""The encoder interface: uint8 image batches and texts in, L2-normalized float32 vectors out.

Three implementations, chosen by ``IMAGESEARCH_ENCODER``, all running the same exported ONNX files:
ONNX Runtime in-process (``onnx``), OpenVINO in-process (``openvino``, the fastest on a CPU) and
NVIDIA Triton over gRPC (``triton``). Nothing above this interface knows which one it talks to.
"""

from __future__ import annotations

from imagesearch.config import Settings
from imagesearch.encoders.base import Encoder, EncoderUnavailable, ReferenceCheckFailed, TowerEncoder, row_cosines
from imagesearch.model_card import TOWERS, ModelCard, Tower, load_card

__all__ = ["Encoder", "EncoderUnavailable", "ReferenceCheckFailed", "TowerEncoder", "make_encoder", "row_cosines"]


def make_encoder(settings: Settings, card: ModelCard | None = None, towers: tuple[Tower, ...] = TOWERS,
                 bulk: bool = False) -> Encoder:
    """The configured encoder with ``towers`` loaded and checked: an embedder loads only the visual
    one (a text tower is a large share of a model's memory and start-up, which it would never use).
    ``bulk``: the caller embeds image batches for throughput, not single queries for latency (the
    ingest); ONNX Runtime on a CPU then runs parts of each batch at once (``onnx_image_runs``)."""
    card = card or load_card(settings.model_repository, settings.model)
    if settings.encoder == "triton":
        from imagesearch.encoders.triton import TritonEncoder

        return TritonEncoder(card, settings, towers)
    if settings.encoder == "openvino":
        from imagesearch.encoders.openvino import OpenVinoEncoder

        return OpenVinoEncoder(card, settings, towers)
    from imagesearch.encoders.onnx import OnnxEncoder

    return OnnxEncoder(card, settings, towers, bulk=bulk)
