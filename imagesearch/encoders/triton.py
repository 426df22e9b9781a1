"""Encoder client for NVIDIA Triton over gRPC (``IMAGESEARCH_ENCODER=triton``).

* Text is tokenized here (same ``Tokenizer`` as the in-process encoder); token ids and uint8 pixels
  travel as binary tensors (gRPC raw contents), embeddings come back the same way.
* Start-up waits for the server and both models to be ready (``triton_startup_wait_s``), then
  raises ``EncoderUnavailable`` naming the URL and model.
* Each request has a deadline (``triton_timeout_s``) and is retried with exponential backoff while
  the server is unavailable (down, restarting, connection refused) for up to ``triton_retry_s``;
  then ``EncoderUnavailable``. The gRPC channel reconnects by itself, so the same object recovers
  when the server is back: no restart of the caller.
* **Thread-safe**: one gRPC channel multiplexes concurrent calls. Ingest keeps several batches in
  flight by calling ``encode_images`` from several threads; the server's dynamic batcher merges
  them. (The API can call the methods from its thread pool in the same way.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential
from tritonclient.utils import InferenceServerException

from imagesearch.config import Settings
from imagesearch.encoders.base import EncoderUnavailable, TowerEncoder
from imagesearch.model_card import INPUTS, OUTPUT, TOWERS, VARIANT_FILES, VARIANT_PARAMETER, ModelCard, Tower
from imagesearch.tokenizer import Tokenizer

log = logging.getLogger(__name__)
T = TypeVar("T")

VARIANT_OF_FILE = {file: variant for variant, file in VARIANT_FILES.items()}


def served_variant(config) -> str:
    """The variant (fp32, fp16, int8) a model's Triton config serves."""
    if VARIANT_PARAMETER in config.parameters and config.parameters[VARIANT_PARAMETER].string_value in VARIANT_FILES:
        return config.parameters[VARIANT_PARAMETER].string_value
    return VARIANT_OF_FILE.get(config.default_model_filename or VARIANT_FILES["fp32"], "fp32")


# Reconnect quickly after a restart instead of gRPC's default backoff (up to 120 s).
CHANNEL_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
]


def _status(exc: Exception) -> str:
    return (exc.status() or "") if isinstance(exc, InferenceServerException) else ""


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the server is down, restarting, or the connection was refused/reset."""
    return isinstance(exc, InferenceServerException) and _status(exc) == str(grpc.StatusCode.UNAVAILABLE)


class TritonEncoder(TowerEncoder):
    def __init__(self, card: ModelCard, settings: Settings, towers: tuple[Tower, ...] = TOWERS):
        self.card = card
        self.towers = towers
        self.url = settings.triton_url
        self.timeout_s = settings.triton_timeout_s
        self.retry_s = settings.triton_retry_s
        self.batch_size = max(1, settings.batch_size)
        self.tokenizer = Tokenizer.from_card(card, settings.model_repository)
        self.models = {tower: card.model_name(tower) for tower in towers}
        self.max_batch = {tower: self.batch_size for tower in self.models}
        self.variant = "fp32"  # what the server loaded, read from its model config
        self.on_gpu = False
        self._client = grpcclient.InferenceServerClient(self.url, channel_args=CHANNEL_ARGS)
        try:
            self.wait_ready(settings.triton_startup_wait_s)
            self.reference_check = self.check_reference(settings.model_repository, self.variant,
                                                        settings.reference_check, reduced_precision=self.on_gpu)
        except BaseException:
            self._client.close()
            raise

    # --- readiness ---------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the server and the towers' models are ready; read each model's max batch size."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                self._check_models()
                return
            except EncoderUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _check_models(self) -> None:
        for tower, model in self.models.items():
            try:
                ready = self._client.is_model_ready(model, client_timeout=self.timeout_s)
                config = self._client.get_model_config(model, client_timeout=self.timeout_s).config if ready else None
            except InferenceServerException as exc:
                raise self._error(model, exc) from exc
            if not ready or config is None:
                raise EncoderUnavailable(
                    f"model {model!r} is not loaded in Triton at {self.url}: is it in the server's model "
                    "repository (`imagesearch export --repository ...`) and did it load? (see the server log)"
                )
            name, _ = INPUTS[tower]
            if [i.name for i in config.input] != [name]:
                raise EncoderUnavailable(
                    f"model {model!r} in Triton at {self.url} takes inputs {[i.name for i in config.input]}, "
                    f"expected [{name!r}]: the server's repository holds a different export"
                )
            if config.max_batch_size > 0:
                self.max_batch[tower] = min(self.batch_size, config.max_batch_size)
            self.variant = served_variant(config)
            self.on_gpu = any(group.kind == group.KIND_GPU for group in config.instance_group)

    # --- requests ----------------------------------------------------------------------------

    def _error(self, model: str, exc: InferenceServerException) -> EncoderUnavailable:
        status = _status(exc)
        if status == str(grpc.StatusCode.NOT_FOUND) or "unknown model" in (exc.message() or ""):
            return EncoderUnavailable(f"model {model!r} is not available in Triton at {self.url}: {exc.message()}")
        if status == str(grpc.StatusCode.DEADLINE_EXCEEDED):
            return EncoderUnavailable(f"Triton at {self.url} did not answer for model {model!r} within {self.timeout_s:g}s")
        if _transient(exc):
            return EncoderUnavailable(f"Triton at {self.url} is unavailable for model {model!r}: {exc.message()}")
        return EncoderUnavailable(f"Triton at {self.url} failed for model {model!r}: {status} {exc.message()}")

    def _with_retry(self, model: str, call: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            stop=stop_after_delay(self.retry_s),
            before_sleep=lambda state: log.warning("Triton at %s unavailable for %s; retrying", self.url, model),
            reraise=True,
        )
        try:
            return retrying(call)
        except InferenceServerException as exc:
            raise self._error(model, exc) from exc

    def _run(self, tower: Tower, batch: np.ndarray) -> np.ndarray:
        model = self.models[tower]
        name, dtype = INPUTS[tower]
        datatype = dtype.upper()  # Triton's wire names: UINT8, INT64
        step = self.max_batch[tower]
        parts = []
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step])
            tensor = grpcclient.InferInput(name, list(chunk.shape), datatype)
            tensor.set_data_from_numpy(chunk)  # binary (raw) tensor contents
            def infer(tensor: grpcclient.InferInput = tensor) -> grpcclient.InferResult:
                return self._client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(OUTPUT)],
                                          client_timeout=self.timeout_s)

            result = self._with_retry(model, infer)
            parts.append(result.as_numpy(OUTPUT))
        return np.concatenate(parts).astype(np.float32, copy=False)

    def health(self) -> dict:
        info = {"backend": "triton", "url": self.url, "models": list(self.models.values()), "variant": self.variant,
                "reference_check": self.reference_check}
        try:
            ready = all(self._client.is_model_ready(m, client_timeout=min(self.timeout_s, 5.0)) for m in self.models.values())
            return {"ok": bool(ready), **info} if ready else {"ok": False, **info, "error": "models not ready"}
        except Exception as exc:  # health never raises
            message = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
            return {"ok": False, **info, "error": f"Triton at {self.url}: {message}"}

    def close(self) -> None:
        self._client.close()
