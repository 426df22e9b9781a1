"""In-process encoder: the exported ONNX files run by ONNX Runtime (CUDA when available, else CPU)."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from imagesearch.config import Settings
from imagesearch.encoders import TowerEncoder
from imagesearch.model_card import TOWERS, ModelCard, Tower
from imagesearch.tokenizer import Tokenizer


def _providers(requested: str) -> list[str]:
    available = ort.get_available_providers()
    if requested:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise RuntimeError(f"ONNX Runtime providers {missing} are not available (have {available})")
        return wanted
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def make_session(path, providers: list[str] | None = None, threads: int = 0, variant: str = "fp32",
                 spinning: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session for one exported file (shared by the encoder and the export checks).
    ``spinning=False``: the intra-op threads sleep as soon as a run ends instead of spinning for
    the next one, leaving the cores to the work between runs (a query's exact search)."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = providers or ["CPUExecutionProvider"]
    # ORT's extended CPU graph fusions crash on fp16 graphs (seen with ORT 1.2x); basic ones are safe.
    fp16_on_cpu = variant == "fp16" and providers[0] == "CPUExecutionProvider"
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if fp16_on_cpu else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxEncoder(TowerEncoder):
    def __init__(self, card: ModelCard, settings: Settings, towers: tuple[Tower, ...] = TOWERS):
        self.card = card
        self.towers = towers
        self.batch_size = max(1, settings.batch_size)
        self.tokenizer = Tokenizer.from_card(card, settings.model_repository)
        providers = _providers(settings.onnx_providers)
        repo, variant, threads = settings.model_repository, settings.model_variant, settings.onnx_threads
        # Text runs one query at a time between searches over the vectors: by default its threads do
        # not spin on the cores the search needs (README, "Search API").
        spinning = {"visual": True, "textual": settings.onnx_text_spinning}
        self._sessions = {tower: make_session(card.onnx_path(repo, tower, variant), providers, threads, variant,
                                              spinning=spinning[tower]) for tower in towers}
        self.providers = next(iter(self._sessions.values())).get_providers()
        self.variant = variant
        # One run at a time per session: ORT already uses all intra-op threads for one batch.
        self._lock = threading.Lock()
        self.reference_check = self.check_reference(repo, variant, settings.reference_check,
                                                    reduced_precision=self.providers[0] != "CPUExecutionProvider")

    def _run(self, tower: Tower, batch: np.ndarray) -> np.ndarray:
        session = self._sessions[tower]
        name = session.get_inputs()[0].name
        parts = []
        for start in range(0, len(batch), self.batch_size):
            with self._lock:
                parts.append(session.run(None, {name: batch[start : start + self.batch_size]})[0])
        return np.concatenate(parts).astype(np.float32, copy=False)

    def health(self) -> dict:
        return {"ok": True, "backend": "onnx", "providers": self.providers, "variant": self.variant,
                "reference_check": self.reference_check}

    def close(self) -> None:
        pass
