"""Rate limits: a token bucket per client (its API key, or its address when the API has no keys) for
each kind of request that costs the encoder: ``searches`` (by text or by an indexed image) and
``uploads`` (searches that encode an image: an upload or an image URL, the dearer kind).

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a request takes one, or is refused
with 429 and ``Retry-After`` (the seconds until the bucket has a token again). A refused request
takes nothing, so a client that retries early only waits as long as it was told.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from prometheus_client import Counter

from imagesearch.api.auth import CLIENT
from imagesearch.api.errors import ApiError
from imagesearch.config import Settings

Kind = Literal["searches", "uploads"]
KINDS: tuple[Kind, ...] = ("searches", "uploads")
MAX_CLIENTS = 10_000  # buckets kept per kind; the least recently seen client's goes first (it starts full again)


@dataclass
class TokenBucket:
    rate: float  # tokens gained per second
    burst: int  # most tokens held
    tokens: float
    updated: float  # time.monotonic() of the last update

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is one (nothing taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimits:
    """The buckets of every client, per kind; a kind whose rate is 0 is not limited."""

    def __init__(self, settings: Settings, refused: Counter):
        self.limits: dict[Kind, tuple[float, int]] = {
            "searches": (settings.search_rate_per_s, settings.search_burst),
            "uploads": (settings.upload_rate_per_s, settings.upload_burst)}
        self.refused = refused
        self.buckets: dict[Kind, OrderedDict[str, TokenBucket]] = {kind: OrderedDict() for kind in KINDS}
        self._lock = threading.Lock()

    def take(self, kind: Kind, client: str) -> None:
        """Let one request of ``kind`` by ``client`` through, or raise the 429."""
        rate, burst = self.limits[kind]
        if rate <= 0:
            return
        with self._lock:
            now, buckets = time.monotonic(), self.buckets[kind]
            bucket = buckets.get(client)
            if bucket is None:
                bucket = buckets[client] = TokenBucket(rate, burst, burst, now)
                if len(buckets) > MAX_CLIENTS:
                    buckets.popitem(last=False)
            buckets.move_to_end(client)
            wait_s = bucket.take(now)
        if wait_s:
            self.refused.labels(kind).inc()
            raise ApiError(429, "rate_limited", f"too many {kind}: at most {rate:g} a second (bursts of {burst}); "
                           "try again after Retry-After seconds", {"Retry-After": str(max(1, math.ceil(wait_s)))})


@dataclass
class ClientLimits:
    """The rate limits as they apply to the client of one request."""

    limits: RateLimits
    client: str

    def take(self, kind: Kind) -> None:
        self.limits.take(kind, self.client)


async def _client_limits(request: Request) -> ClientLimits:  # async: FastAPI runs a plain def on a worker thread
    return ClientLimits(request.app.state.context.limits, request.scope.get(CLIENT, "address unknown"))


Limits = Annotated[ClientLimits, Depends(_client_limits)]
