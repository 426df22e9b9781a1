"""Decode each new image once when the download (or scan) and the embedder run in one process.

The download verifies every image by decoding it; the embedder decodes it again at the model's
input size. With a hand-off the verification *is* that decode (``probe_and_prepare``): its pixels
wait here, keyed by model and image id, until the embedder takes them, and only images whose
pixels are not here (an earlier run's, a duplicate's) are read back from the images folder. That
saves a decode per image on the cores the encoder needs.

Bounded: once ``max_bytes`` of pixels wait, the download waits for the embedder (it is ahead of
it anyway); after ``wait_s`` without room the oldest pixels are dropped (the embedder decodes
those itself), so a stalled or finished embedder never stalls the download for long.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from imagesearch.blobs import sha256_hex
from imagesearch.model_card import ModelCard
from imagesearch.preprocess import ImageDecodeError, ImageInfo, probe, probe_and_prepare
from imagesearch.records import ImageRecord


class DecodedHandoff:
    def __init__(self, cards: Sequence[ModelCard], *, draft: bool, max_bytes: int, wait_s: float = 30.0):
        self.cards, self.draft, self.max_bytes, self.wait_s = list(cards), draft, max_bytes, wait_s
        self._pixels: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._room = threading.Condition()
        self._open = bool(self.cards) and max_bytes > 0
        self.handed = self.taken = self.dropped = 0  # images handed over, arrays taken, arrays dropped (tests)

    def verify(self, data: bytes, max_pixels: int, image_id: str | None = None,
               before_waiting: Callable[[], None] | None = None) -> ImageInfo:
        """``probe``'s contract (``ImageDecodeError`` for what is not a usable image), keeping the
        pixels of each model for the embedder. ``before_waiting``: called once before the caller
        would wait for room (a scan writes its records first, so the embedder can take them)."""
        if not self._open:
            return probe(data, max_pixels)
        pixels = {}
        try:
            for card in self.cards:
                info, pixels[card.slug] = probe_and_prepare(data, card, max_pixels=max_pixels, draft=self.draft)
        except ImageDecodeError:
            raise
        except Exception:  # noqa: BLE001 - not a verification failure: the embedder's own decode reports it
            return probe(data, max_pixels)
        self._put(image_id or sha256_hex(data), pixels, before_waiting)
        return info

    def _put(self, image_id: str, pixels: dict[str, np.ndarray], before_waiting: Callable[[], None] | None) -> None:
        size = sum(array.nbytes for array in pixels.values())
        with self._room:
            if self._bytes + size > self.max_bytes and self._open and before_waiting is not None:
                self._room.release()  # the callback may take a while (a store write): do not hold the lock
                try:
                    before_waiting()
                finally:
                    self._room.acquire()
            deadline = time.monotonic() + self.wait_s
            while self._bytes + size > self.max_bytes and self._open and self._pixels:
                left = deadline - time.monotonic()
                if left <= 0:  # the embedder is not taking these: make room, it decodes them itself
                    _, dropped = self._pixels.popitem(last=False)
                    self._bytes -= dropped.nbytes
                    self.dropped += 1
                    continue
                self._room.wait(left)
            if not self._open:
                return
            for slug, array in pixels.items():
                self._bytes -= self._drop((slug, image_id))
                self._pixels[(slug, image_id)] = array
                self._bytes += array.nbytes
            self.handed += 1

    def _drop(self, key: tuple[str, str]) -> int:
        array = self._pixels.pop(key, None)
        return 0 if array is None else array.nbytes

    def take(self, slug: str, image_id: str) -> np.ndarray | None:
        """The pixels the download kept for this model and image (once), or None."""
        with self._room:
            array = self._pixels.pop((slug, image_id), None)
            if array is not None:
                self._bytes -= array.nbytes
                self.taken += 1
                self._room.notify_all()
            return array

    def stored(self, records: Sequence[ImageRecord], created: Sequence[bool]) -> None:
        """After a store write: drop the pixels of the images that were stored before this run (a
        duplicate's bytes), which an embedder may never ask for."""
        new = {record.id for record, is_new in zip(records, created, strict=True) if is_new}
        old = {record.id for record, is_new in zip(records, created, strict=True) if not is_new} - new
        if not old:
            return
        with self._room:
            for image_id in old:
                for card in self.cards:
                    self._bytes -= self._drop((card.slug, image_id))
            self._room.notify_all()

    def close(self) -> None:
        """No more hand-offs (the embedder has ended): verifying goes back to ``probe``."""
        with self._room:
            self._open = False
            self._pixels.clear()
            self._bytes = 0
            self._room.notify_all()
