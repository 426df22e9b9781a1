"""The data every service passes around: image records, URL failures, search hits, counts."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_K = 10_000  # the most results one search can return: Elasticsearch's result window, and both stores' cap
Source = Literal["url", "folder", "upload"]

# Why a URL produced no image. Stable codes: the CLI summary, /status and the store use them.
FAILURE_REASONS = (
    "http_status",  # a 4xx/5xx that was not retried away (detail has the code)
    "timeout",
    "connection",
    "too_large",
    "not_an_image",
    "blocked",  # SSRF guard, bad scheme
    "robots",  # robots.txt disallows it (or cannot be read), or X-Robots-Tag: noai / noimageai
    "too_many_redirects",
    "invalid_url",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def is_image_id(value: str) -> bool:
    return bool(SHA256_HEX.fullmatch(value))  # not match(): "$" would also match before a final newline


class ImageRecord(BaseModel):
    """One image, identified by the sha256 of its bytes. The same picture from two URLs is one record."""

    id: str
    urls: list[str] = Field(default_factory=list)
    captions: list[str] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list, description="folder files it was found at")
    width: int
    height: int
    format: str  # jpeg, png, webp, gif, bmp, tiff
    bytes: int
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)

    @property
    def url(self) -> str | None:
        """The address a user would recognize: the first URL, else the folder path."""
        return self.urls[0] if self.urls else (self.paths[0] if self.paths else None)

    @property
    def keyword_text(self) -> str:
        """What keyword search matches: the captions, and the words of the file names in the URLs
        and folder paths (``Eiffel_Tower-1889.jpg`` -> ``Eiffel Tower 1889 jpg``)."""
        names = [url.split("?")[0].split("#")[0].rstrip("/").rsplit("/", 1)[-1] for url in self.urls]
        names += [path.rsplit("/", 1)[-1] for path in self.paths]
        return " ".join([*self.captions, *(re.sub(r"[\W_]+", " ", name) for name in names)]).strip()

    def merge(self, other: "ImageRecord") -> "ImageRecord":
        """This record plus what ``other`` (same id) adds: new URLs, captions, sources, paths."""

        def union(a: list, b: list) -> list:
            return a + [x for x in b if x not in a]

        return self.model_copy(update={
            "urls": union(self.urls, other.urls),
            "captions": union(self.captions, other.captions),
            "sources": union(self.sources, other.sources),
            "paths": union(self.paths, other.paths),
            "first_seen": min(self.first_seen, other.first_seen),
            "last_seen": max(self.last_seen, other.last_seen),
        })


class UrlFailure(BaseModel):
    url: str
    reason: str  # one of FAILURE_REASONS
    detail: str = ""
    caption: str = ""
    attempts: int = 1
    at: datetime = Field(default_factory=utcnow)


class SearchFilters(BaseModel):
    """Metadata filters applied inside the vector search (pre-filter)."""

    format: list[str] | None = Field(None, description="keep only these formats, e.g. ['jpeg','png']")
    source: list[Source] | None = None
    min_width: int | None = Field(None, ge=0)
    min_height: int | None = Field(None, ge=0)
    max_width: int | None = Field(None, ge=0)
    max_height: int | None = Field(None, ge=0)

    def matches(self, record: ImageRecord) -> bool:
        return (
            (self.format is None or record.format in self.format)
            and (self.source is None or any(s in self.source for s in record.sources))
            and (self.min_width is None or record.width >= self.min_width)
            and (self.min_height is None or record.height >= self.min_height)
            and (self.max_width is None or record.width <= self.max_width)
            and (self.max_height is None or record.height <= self.max_height)
        )


class Hit(BaseModel):
    id: str
    score: float
    record: ImageRecord


class Counts(BaseModel):
    images: int = 0
    embedded: int = 0
    pending: int = 0
    embed_failed: int = 0
    failed_urls: int = 0
    failed_by_reason: dict[str, int] = Field(default_factory=dict)
