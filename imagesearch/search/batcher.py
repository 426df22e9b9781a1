"""Concurrent text queries share one encoder call (micro-batching)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np


class TextBatcher:
    """Collects texts submitted from many threads and encodes them together.

    One worker thread takes the first waiting text, then whatever else arrives within ``max_wait_s``
    (up to ``max_batch``), and makes one ``encode`` call for all of them. Under load the batch fills
    while the previous one is being encoded, so throughput approaches the encoder's batch throughput.
    The wait is only spent while texts come together (the last call had more than one): a lone
    query, the last one having been alone too, goes to the encoder at once.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], max_batch: int = 32, max_wait_s: float = 0.002):
        self._encode = encode
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self._queue: queue.SimpleQueue[tuple[str, Future] | None] = queue.SimpleQueue()
        self._stopped = False
        self.batches = self.texts = 0  # counters for /status and the benchmark
        self._last_batch = 0
        self._thread = threading.Thread(target=self._loop, name="text-batcher", daemon=True)
        self._thread.start()

    def encode(self, text: str) -> np.ndarray:
        if self._stopped:
            raise RuntimeError("the text batcher is closed")
        future: Future = Future()
        self._queue.put((text, future))
        return future.result()

    def close(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: tuple[str, Future]) -> tuple[list[tuple[str, Future]], bool]:
        batch, deadline = [first], time.monotonic() + (self.max_wait_s if self._last_batch > 1 else 0.0)
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            self._last_batch = len(batch)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[str, Future]]) -> None:
        texts = list(dict.fromkeys(text for text, _ in batch))  # identical concurrent queries: encode once
        try:
            vectors = dict(zip(texts, self._encode(texts), strict=True))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) > 1:  # one bad text must not fail the others: retry each on its own
                for item in batch:
                    self._run([item])
                return
            batch[0][1].set_exception(exc)
            return
        self.batches += 1
        self.texts += len(texts)
        for text, future in batch:
            future.set_result(vectors[text])
