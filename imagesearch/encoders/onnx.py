"""In-process encoder: the exported ONNX files run by ONNX Runtime (CUDA when available, else CPU).

For the ingest (``bulk``) on a CPU, each image batch is cut into parts (of at most ``PART_IMAGES``)
that run at once, each on its share of the threads. One run on all threads has them meet at every
layer, so one thread held up (by the decoding beside it, or by the other tenants of a VM's cores)
holds up all of them; parts on their own threads never wait for each other. The API encodes one
query at a time on all threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from imagesearch.config import Settings
from imagesearch.encoders.base import TowerEncoder
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


# The ingest's parts hold at most this many images: beside the decoding, smaller parts cost less CPU
# per image than larger ones (bench/bench_ingest.py); on raw pixels the size hardly matters.
PART_IMAGES = 8


def image_runs(settings: Settings, providers: list[str]) -> tuple[int, int]:
    """(parts of an image batch run at once, threads of each) for the ingest's encoder."""
    if providers[0] != "CPUExecutionProvider":
        return 1, settings.onnx_threads  # a GPU takes a whole batch best
    # the cores this process may use (a container's cpuset); macOS has no sched_getaffinity
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = settings.onnx_threads or cores
    runs = min(settings.onnx_image_runs or min(threads, 8), threads)
    return runs, max(1, threads // runs)


class OnnxEncoder(TowerEncoder):
    def __init__(self, card: ModelCard, settings: Settings, towers: tuple[Tower, ...] = TOWERS, bulk: bool = False):
        self.card = card
        self.towers = towers
        self.batch_size = max(1, settings.batch_size)
        self.tokenizer = Tokenizer.from_card(card, settings.model_repository)
        providers = _providers(settings.onnx_providers)
        repo, variant, threads = settings.model_repository, settings.model_variant, settings.onnx_threads
        # Text runs one query at a time between searches over the vectors: by default its threads do
        # not spin on the cores the search needs (docs/api.md, "Limits and tuning").
        spinning = {"visual": True, "textual": settings.onnx_text_spinning}
        self.image_runs, image_threads = image_runs(settings, providers) if bulk else (1, threads)
        tower_threads = {"visual": image_threads, "textual": threads}
        self._sessions = {tower: make_session(card.onnx_path(repo, tower, variant), providers, tower_threads[tower], variant,
                                              spinning=spinning[tower]) for tower in towers}
        self._parts = ThreadPoolExecutor(self.image_runs, thread_name_prefix="onnx-run") if self.image_runs > 1 else None
        self.providers = next(iter(self._sessions.values())).get_providers()
        self.variant = variant
        # One batch at a time: it already has all the threads (in one run, or in its parts).
        self._lock = threading.Lock()
        self.reference_check = self.check_reference(repo, variant, settings.reference_check,
                                                    reduced_precision=self.providers[0] != "CPUExecutionProvider")

    def _run(self, tower: Tower, batch: np.ndarray) -> np.ndarray:
        session = self._sessions[tower]
        name = session.get_inputs()[0].name
        outputs: list[np.ndarray] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            with self._lock:
                if tower == "visual" and self._parts is not None and len(chunk) > 1:
                    parts = np.array_split(chunk, min(len(chunk), max(self.image_runs, -(-len(chunk) // PART_IMAGES))))
                    outputs.extend(self._parts.map(lambda part: session.run(None, {name: part})[0], parts))
                else:
                    outputs.append(session.run(None, {name: chunk})[0])
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def health(self) -> dict:
        return {"ok": True, "backend": "onnx", "providers": self.providers, "variant": self.variant,
                "image_runs": self.image_runs, "reference_check": self.reference_check}

    def close(self) -> None:
        if self._parts is not None:
            self._parts.shutdown()
