"""What makes a query usable, checked in one place for the CLI and the API."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from imagesearch.records import MAX_K, SearchFilters

Mode = Literal["vector", "text", "hybrid"]
Sort = Literal["relevance", "newest", "oldest"]


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


def check_page(k: int, offset: int, max_k: int) -> None:
    """k within the service's limit, and the page within the stores' reach (``MAX_K`` results)."""
    if not 1 <= k <= max_k:
        raise QueryError(f"k must be between 1 and {max_k}, got {k}")
    if offset < 0:
        raise QueryError(f"offset must be 0 or more, got {offset}")
    if offset + k > MAX_K:
        raise QueryError(f"offset + k must be at most {MAX_K} (the most results a search can reach), got {offset + k}")


def filters_from(base: type[SearchFilters] = SearchFilters, **given: object) -> SearchFilters | None:
    """The filters of loose values (CLI options, query parameters, form fields; None: not given),
    or None when none is given. ``QueryError`` names what is wrong."""
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        return None
    try:
        return base.model_validate(given)
    except ValidationError as exc:
        problems = ["{}: {}".format(".".join(map(str, e["loc"])) or "filters", e["msg"].removeprefix("Value error, "))
                    for e in exc.errors()]
        raise QueryError("; ".join(problems)) from None
