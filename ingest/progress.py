"""Progress reporting: a tqdm bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

from tqdm import tqdm

log = logging.getLogger("imagesearch.ingest")


class Progress:
    def __init__(self, desc: str, total: int | None = None, log_every_s: float = 10.0):
        self.desc = desc
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()
        self._last_log = self.started
        self._log_every_s = log_every_s
        self._bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True) if sys.stderr.isatty() else None

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def __call__(self, event: str, n: int = 1) -> None:
        """Count ``n`` items that ended as ``event`` (e.g. embedded, failed:timeout, duplicate)."""
        self.counts[event] += n
        if self._bar is not None:
            self._bar.update(n)
            failed = sum(v for k, v in self.counts.items() if k.startswith("failed"))
            self._bar.set_postfix(failed=failed, refresh=False)
        elif time.monotonic() - self._last_log >= self._log_every_s:
            self._last_log = time.monotonic()
            log.info("%s: %s (%.1f/s)", self.desc, self.summary(), self.rate())

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def rate(self) -> float:
        return self.done / max(1e-9, time.monotonic() - self.started)

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing to do"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
