"""In-process encoder on OpenVINO's CPU runtime: the same exported ONNX files, compiled for this CPU.

On CPUs that multiply bfloat16 natively (Intel AMX or AVX-512 BF16) OpenVINO runs the fp32 graph's
matrix products in bf16, several times faster than fp32 and within cosine 0.999 of it (the load-time
reference check holds it to that); on other CPUs it runs fp32, usually faster than ONNX Runtime's.
``IMAGESEARCH_OPENVINO_PRECISION`` chooses: ``auto`` (bf16 where native, else f32), ``f32``, ``bf16``.
"""

from __future__ import annotations

import threading

import numpy as np
import openvino as ov

from imagesearch.config import Settings
from imagesearch.encoders.base import TowerEncoder
from imagesearch.model_card import TOWERS, ModelCard, Tower
from imagesearch.tokenizer import Tokenizer


def native_bf16(core: ov.Core) -> bool:
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def inference_precision(core: ov.Core, requested: str) -> str:
    if requested == "auto":
        return "bf16" if native_bf16(core) else "f32"
    return requested


class OpenVinoEncoder(TowerEncoder):
    def __init__(self, card: ModelCard, settings: Settings, towers: tuple[Tower, ...] = TOWERS):
        self.card = card
        self.towers = towers
        self.batch_size = max(1, settings.batch_size)
        self.tokenizer = Tokenizer.from_card(card, settings.model_repository)
        core = ov.Core()
        # LATENCY: one stream using every core for one batch, as the encoder runs one batch at a
        # time (THROUGHPUT splits the cores into streams that only pay off with requests in parallel).
        config: dict[str, str | int] = {"PERFORMANCE_HINT": "LATENCY",
                                        "INFERENCE_PRECISION_HINT": inference_precision(core, settings.openvino_precision)}
        if settings.onnx_threads > 0:
            config["INFERENCE_NUM_THREADS"] = settings.onnx_threads
        repo, variant = settings.model_repository, settings.model_variant
        self.variant = variant
        compiled = {tower: core.compile_model(str(card.onnx_path(repo, tower, variant)), "CPU", config) for tower in towers}
        # What the plugin settled on (a CPU without bf16 computes f32 whatever was asked).
        self.precision = next(iter(compiled.values())).get_property("INFERENCE_PRECISION_HINT").get_type_name()
        # An infer request is not thread-safe, and its output buffer is reused by the next run.
        self._requests = {tower: model.create_infer_request() for tower, model in compiled.items()}
        self._locks = {tower: threading.Lock() for tower in towers}
        self.reference_check = self.check_reference(repo, variant, settings.reference_check,
                                                    reduced_precision=self.precision != "f32")

    def _run(self, tower: Tower, batch: np.ndarray) -> np.ndarray:
        request = self._requests[tower]
        parts = []
        for start in range(0, len(batch), self.batch_size):
            with self._locks[tower]:
                request.infer({0: batch[start : start + self.batch_size]})
                parts.append(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))
        return np.concatenate(parts)

    def health(self) -> dict:
        return {"ok": True, "backend": "openvino", "device": "CPU", "precision": self.precision,
                "variant": self.variant, "reference_check": self.reference_check}

    def close(self) -> None:
        pass
