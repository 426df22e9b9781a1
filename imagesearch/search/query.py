"""What makes a query usable, checked in one place for the CLI and the API."""

from __future__ import annotations

from typing import Literal

Mode = Literal["vector", "text", "hybrid"]


class QueryError(ValueError):
    """The query itself is unusable (bad k, empty text, unknown image id...): a 4xx.

    ``reason`` is a short code: ``invalid_query`` (400), ``not_found`` (404), ``pending`` (409).
    """

    def __init__(self, message: str, reason: str = "invalid_query"):
        super().__init__(message)
        self.reason = reason


def check_one_query(**given: object) -> str:
    """The name of the one query given (``text=..., image_id=...``; None: not given): exactly one must be."""
    named = [name for name, value in given.items() if value is not None]
    if len(named) != 1:
        raise QueryError(f"give exactly one of {', '.join(given)} (got {', '.join(named) or 'none'})")
    return named[0]


def check_mode(mode: Mode, has_text: bool) -> None:
    """Keyword and hybrid search match words: they need a text query."""
    if mode != "vector" and not has_text:
        raise QueryError(f"mode {mode} needs text: an image is searched by its vector only")
