"""The URL list format: one URL per line, an optional TAB and caption; blank lines and ``#`` comments
are ignored. Malformed lines are reported with their line number and skipped, never fatal."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from yarl import URL


@dataclass(frozen=True)
class UrlEntry:
    url: str
    caption: str = ""
    line: int = 0


@dataclass(frozen=True)
class MalformedLine:
    line: int
    text: str
    reason: str


def _problem(url: str) -> str | None:
    if any(c.isspace() for c in url):
        return "the URL contains spaces (separate a caption with a TAB)"
    try:
        parsed = URL(url)  # the fetcher's own parser (imagesearch/fetch.py)
    except (ValueError, TypeError) as exc:
        return f"not a valid URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"not an http(s) URL: {url[:80]!r}"
    if not parsed.raw_host:
        return "the URL has no host"
    return None


def parse_url_lines(lines: Iterable[str]) -> tuple[list[UrlEntry], list[MalformedLine]]:
    """(entries, malformed lines). A URL listed twice is kept once (the first caption wins)."""
    entries: list[UrlEntry] = []
    malformed: list[MalformedLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        url, _, caption = text.partition("\t")
        url, caption = url.strip(), " ".join(caption.split())  # tabs/extra spaces in captions -> one space
        problem = _problem(url)
        if problem:
            malformed.append(MalformedLine(number, text, problem))
        elif url not in seen:
            seen.add(url)
            entries.append(UrlEntry(url, caption, number))
    return entries, malformed


def parse_url_file(path: Path) -> tuple[list[UrlEntry], list[MalformedLine]]:
    with open(path, encoding="utf-8", errors="replace") as f:  # a bad byte spoils one line, not the file
        return parse_url_lines(f)
