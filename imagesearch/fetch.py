"""Fetch one image URL politely and safely: shared by the downloader and the API's search by URL.

One attempt = the whole redirect chain (followed here, at most ``max_redirects``), each hop checked
by the SSRF guard: the URL before a request is sent (scheme, host, an IP literal's address), and a
host name's addresses inside the client's own DNS step, so the addresses checked are the addresses
connected to (a DNS answer cannot change between the check and the connect). Which addresses are
refused is ``imagesearch.addresses``' explicit list.
Attempts are retried with exponential backoff and jitter on timeouts, connection errors, 429 and 5xx,
honouring ``Retry-After``. Everything else fails at once with a typed :class:`FetchError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from multidict import CIMultiDictProxy
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random
from yarl import URL

from imagesearch.addresses import denied, ip_literal
from imagesearch.config import Settings
from imagesearch.preprocess import ImageDecodeError, ImageInfo, probe
from imagesearch.records import FAILURE_REASONS

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
NOAI_DIRECTIVES = {"noai", "noimageai"}
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+(%\w+)?")  # a DNS name (IDNA-encoded) or an IP literal
_THREAD_DECODE_BYTES = 512 * 1024  # decode bigger bodies off the event loop
_READ_CHUNK = 64 * 1024


class FetchError(Exception):
    """Why a URL gave no image. ``reason`` is one of ``FAILURE_REASONS``."""

    def __init__(self, reason: str, detail: str = "", *, retryable: bool = False,
                 retry_after: float | None = None, attempts: int = 1, status: int | None = None):
        assert reason in FAILURE_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts
        self.status = status  # the HTTP status, for http_status


def _default(setting: str):
    return Settings.model_fields[setting].default


@dataclass(frozen=True)
class FetchOptions:
    # Each default is the setting's (one place for each): ``from_settings`` is how services build these.
    user_agent: str = _default("download_user_agent")
    connect_timeout_s: float = _default("download_connect_timeout_s")
    read_timeout_s: float = _default("download_read_timeout_s")
    total_timeout_s: float = _default("download_total_timeout_s")
    retries: int = _default("download_retries")
    backoff_s: float = _default("download_backoff_s")
    backoff_max_s: float = _default("download_backoff_max_s")
    max_retry_after_s: float = _default("download_max_retry_after_s")
    max_bytes: int = _default("download_max_bytes")
    max_redirects: int = _default("download_max_redirects")
    honour_noai: bool = _default("download_honour_noai")
    allow_private_networks: bool = _default("allow_private_networks")
    allowed_networks: tuple[str, ...] = ()
    max_pixels: int = _default("max_image_pixels")
    _allowed: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_allowed", tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks))

    @classmethod
    def from_settings(cls, s: Settings) -> FetchOptions:
        return cls(
            user_agent=s.download_user_agent, connect_timeout_s=s.download_connect_timeout_s,
            read_timeout_s=s.download_read_timeout_s, total_timeout_s=s.download_total_timeout_s,
            retries=s.download_retries, backoff_s=s.download_backoff_s, backoff_max_s=s.download_backoff_max_s,
            max_retry_after_s=s.download_max_retry_after_s, max_bytes=s.download_max_bytes,
            max_redirects=s.download_max_redirects, honour_noai=s.download_honour_noai,
            allow_private_networks=s.allow_private_networks, allowed_networks=tuple(s.download_allowed_networks),
            max_pixels=s.max_image_pixels,
        )


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    info: ImageInfo
    final_url: str
    attempts: int = 1


def make_client(options: FetchOptions, max_connections: int = 100) -> aiohttp.ClientSession:
    """The client fetch_image expects (create it inside a running event loop): no automatic
    redirects (each hop is checked here), no proxies from the environment (a proxy would hide the
    address really connected to), and the SSRF guard in its DNS step."""
    # aiohttp over httpx: about a tenth of the client CPU per request (bench_downloader), which is
    # what bounds a download's URLs/s on a few cores.
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0,
                                     resolver=None if options.allow_private_networks else GuardedResolver(options))
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        headers={"User-Agent": options.user_agent, "Accept": "image/*,*/*;q=0.5"},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=options.connect_timeout_s, sock_read=options.read_timeout_s),
    )


# --- SSRF guard --------------------------------------------------------------------------------

class BlockedAddress(OSError):
    """A host name resolved to a non-public address (raised in the client's DNS step)."""


class GuardedResolver(ThreadedResolver):
    """The client's DNS step: a host name any of whose addresses is non-public is refused before
    any connection is made, and the connection can only go to the addresses checked here."""

    def __init__(self, options: FetchOptions):
        super().__init__()
        self.options = options

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await super().resolve(host, port, family)
        for answer in answers:
            ip = ipaddress.ip_address(answer["host"].split("%")[0])
            if denied(ip, self.options._allowed):
                raise BlockedAddress(f"{host} resolves to non-public address {ip}")
        return answers


def check_url(url: URL, options: FetchOptions) -> None:
    """Refuse non-http(s) URLs, malformed hosts and, unless private networks are allowed, IP literals
    of non-public addresses (a host name's addresses are checked by ``GuardedResolver``)."""
    if not url.scheme:
        raise FetchError("invalid_url", "not an absolute URL")
    if url.scheme not in ("http", "https"):
        raise FetchError("blocked", f"scheme {url.scheme!r} is not http or https")
    if not url.raw_host or not _HOST.fullmatch(url.raw_host):
        raise FetchError("invalid_url", f"bad host {url.raw_host!r}")
    if options.allow_private_networks:
        return
    ip = ip_literal(url.raw_host)
    if ip is None:
        return  # a name: resolved and checked when the client connects
    if denied(ip, options._allowed):
        raise FetchError("blocked", f"{url.raw_host} is the non-public address {ip}")


# --- one attempt -------------------------------------------------------------------------------

def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _noai(headers: CIMultiDictProxy[str], user_agent: str) -> bool:
    """X-Robots-Tag: ``noai``/``noimageai``, for everyone or for our agent (``imagesearch: noai``)."""
    agent = user_agent.split("/")[0].lower()
    for value in (part for header in headers.getall("X-Robots-Tag", []) for part in header.split(",")):
        directive = value.strip().lower()
        if ":" in directive:
            who, directive = (p.strip() for p in directive.split(":", 1))
            if who not in ("*", agent):
                continue
        if directive in NOAI_DIRECTIVES:
            return True
    return False


def _status_error(response: aiohttp.ClientResponse, options: FetchOptions) -> FetchError:
    code = response.status
    detail = f"HTTP {code}"
    if code == 429 or code >= 500:
        wait = _retry_after(response.headers.get("retry-after"))
        if wait is not None and wait > options.max_retry_after_s:
            return FetchError("http_status", f"{detail}, Retry-After {wait:.0f}s is too long", status=code)
        return FetchError("http_status", detail, retryable=True, retry_after=wait, status=code)
    return FetchError("http_status", detail, status=code)


async def _read_body(response: aiohttp.ClientResponse, options: FetchOptions) -> bytes:
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > options.max_bytes:
        raise FetchError("too_large", f"Content-Length {length} is over {options.max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > options.max_bytes:  # stop reading now, not after the whole body arrived
            raise FetchError("too_large", f"body is over {options.max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _attempt(client: aiohttp.ClientSession, url: URL, options: FetchOptions) -> tuple[bytes, str]:
    for _ in range(options.max_redirects + 1):
        check_url(url, options)
        async with client.get(url, allow_redirects=False) as response:
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location:
                try:
                    url = url.join(URL(location))
                except (ValueError, TypeError) as exc:
                    raise FetchError("invalid_url", f"bad redirect location {location!r}: {exc}") from None
                continue
            if not 200 <= response.status < 300:
                raise _status_error(response, options)
            if options.honour_noai and _noai(response.headers, options.user_agent):
                raise FetchError("robots", "X-Robots-Tag forbids AI use (noai/noimageai)")
            return await _read_body(response, options), str(url)
    raise FetchError("too_many_redirects", f"more than {options.max_redirects} redirects")


async def _attempt_with_timeout(client: aiohttp.ClientSession, url: URL, options: FetchOptions) -> tuple[bytes, str]:
    try:
        return await asyncio.wait_for(_attempt(client, url, options), options.total_timeout_s)
    except (TimeoutError, asyncio.TimeoutError) as exc:  # the attempt, or aiohttp's connect or read timeout (3.10: two types)
        raise FetchError("timeout", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                         retryable=True) from None
    except aiohttp.InvalidURL as exc:
        raise FetchError("invalid_url", str(exc)) from None
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, BlockedAddress):
            raise FetchError("blocked", str(exc.os_error)) from None
        raise FetchError("connection", f"cannot resolve {url.raw_host}: {exc.os_error}", retryable=True) from None
    except aiohttp.ClientError as exc:  # refused, reset, TLS, bad HTTP, bad gzip
        raise FetchError("connection", f"{type(exc).__name__}: {exc}", retryable=True) from None


def _backoff(options: FetchOptions):
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""
    backoff = wait_exponential(multiplier=options.backoff_s, max=options.backoff_max_s) + wait_random(0, options.backoff_s)

    def wait(retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return max(backoff(retry_state), getattr(exc, "retry_after", None) or 0.0)

    return wait


async def fetch_bytes(client: aiohttp.ClientSession, url: str, options: FetchOptions) -> tuple[bytes, str, int]:
    """GET ``url`` through the guard, limits, timeouts and retries -> (body, final URL, attempts)."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError("invalid_url", str(exc)) from None
    retrying = AsyncRetrying(
        stop=stop_after_attempt(options.retries + 1),
        wait=_backoff(options),
        retry=retry_if_exception(lambda e: isinstance(e, FetchError) and e.retryable),
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts += 1
                data, final_url = await _attempt_with_timeout(client, parsed, options)
    except FetchError as exc:
        exc.attempts = attempts
        raise
    return data, final_url, attempts


async def fetch_image(client: aiohttp.ClientSession, url: str, options: FetchOptions,
                      verify: Callable[[bytes, int], ImageInfo] | None = None) -> FetchedImage:
    """GET ``url`` and return its bytes if they decode as an image; raise FetchError otherwise.
    ``verify``: the check instead of ``probe`` (the same contract; it may block: it runs in a thread)."""
    data, final_url, attempts = await fetch_bytes(client, url, options)
    try:
        if verify is not None:
            info = await asyncio.to_thread(verify, data, options.max_pixels)
        elif len(data) > _THREAD_DECODE_BYTES:
            info = await asyncio.to_thread(probe, data, options.max_pixels)
        else:
            info = probe(data, options.max_pixels)
    except ImageDecodeError as exc:
        raise FetchError("not_an_image", f"{exc.reason}: {exc}", attempts=attempts) from None
    return FetchedImage(data, info, final_url, attempts)


def fetch_image_sync(url: str, options: FetchOptions | None = None) -> FetchedImage:
    """One-off fetch outside an event loop (a CLI's ``--image URL``)."""
    options = options or FetchOptions()

    async def run() -> FetchedImage:
        async with make_client(options, max_connections=2) as client:
            return await fetch_image(client, url, options)

    return asyncio.run(run())
