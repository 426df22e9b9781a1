"""robots.txt for the downloader, as RFC 9309 says: fetched once per origin and run, through the same
SSRF guard, limits and timeouts as the images, parsed by Protego (wildcards, Allow/Disallow
precedence, Crawl-delay) for our product token (the User-Agent up to its "/").

- 2xx: the rules apply.
- 4xx (404: no robots.txt): everything is allowed.
- 5xx, a timeout or no connection: "unreachable", so everything on that origin is disallowed for
  this run; the URLs are recorded as ``robots`` failures, and ``--retry-failed`` asks again later.
- refused by the SSRF guard (the origin's own address, or a redirect of robots.txt to a non-public
  one): never requested, and the origin counts as having no robots.txt; its images meet the same
  guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from urllib.parse import urlsplit

import aiohttp
from protego import Protego

from imagesearch.fetch import FetchError, FetchOptions, fetch_bytes

MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309: parse at least 500 KiB
MAX_CRAWL_DELAY_S = 60.0  # a longer Crawl-delay is obeyed as 60 s


@dataclasses.dataclass(frozen=True)
class Verdict:
    allowed: bool
    detail: str = ""  # why not


class RobotsRules:
    def __init__(self, client: aiohttp.ClientSession, options: FetchOptions):
        self.client = client
        self.options = dataclasses.replace(options, max_bytes=MAX_ROBOTS_BYTES, honour_noai=False, retries=1)
        self.agent = options.user_agent.split("/")[0].strip()
        self._rules: dict[str, Protego | str | None] = {}  # origin -> rules, or why it is all disallowed, or None: all allowed
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._next_start: dict[str, float] = {}  # origin -> when its next request may start (Crawl-delay)
        self.fetched = 0

    async def _for(self, origin: str) -> Protego | str | None:
        async with self._locks[origin]:  # one fetch per origin; the others wait for it
            if origin not in self._rules:
                self._rules[origin] = await self._fetch(origin)
            return self._rules[origin]

    async def _fetch(self, origin: str) -> Protego | str | None:
        url = f"{origin}/robots.txt"
        self.fetched += 1
        try:
            body, _, _ = await fetch_bytes(self.client, url, self.options)
        except FetchError as exc:
            if exc.reason == "http_status" and exc.status is not None and 400 <= exc.status < 500:
                return None  # no robots.txt: no rules
            if exc.reason in ("blocked", "invalid_url"):
                return None  # the guard refused it (the host, or where robots.txt redirects): nothing to obey
            return f"robots.txt of {origin} is unreachable ({exc}): treated as disallowing everything (RFC 9309)"
        return Protego.parse(body.decode("utf-8", errors="replace"))

    async def check(self, url: str) -> Verdict:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return Verdict(True)  # not fetchable at all: the fetch says why
        rules = await self._for(f"{parts.scheme}://{parts.netloc}")
        if isinstance(rules, str):
            return Verdict(False, rules)
        if rules is not None and not rules.can_fetch(url, self.agent):
            return Verdict(False, f"robots.txt of {parts.netloc} disallows it for {self.agent}")
        return Verdict(True)

    async def pace(self, url: str) -> None:
        """Wait until the origin's Crawl-delay since the last request started has passed."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        rules = self._rules.get(origin)
        delay = rules.crawl_delay(self.agent) if isinstance(rules, Protego) else None
        if not delay:
            return
        delay = min(float(delay), MAX_CRAWL_DELAY_S)
        now = time.monotonic()
        start = max(now, self._next_start.get(origin, now))
        self._next_start[origin] = start + delay  # reserved before sleeping: the next caller queues behind
        await asyncio.sleep(start - now)
