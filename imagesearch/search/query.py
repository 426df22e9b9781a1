"""What makes a query usable, checked in one place for the CLI and the API."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from imagesearch.records import MAX_K, SearchFilters, is_image_id

Mode = Literal["vector", "text", "hybrid"]
Sort = Literal["relevance", "newest", "oldest"]


class QueryError(ValueError):
    """The query itself is unusable (bad k, empty text, unknown image id...): a 4xx.

    ``reason`` is a short code: ``invalid_query`` (400), ``not_found`` (404), ``pending`` (409).
    """

    def __init__(self, message: str, reason: str = "invalid_query"):
        super().__init__(message)
        self.reason = reason


def check_one_query(positive_ids: Sequence[str] = (), positive_name: str = "positive_ids", **given: object) -> str | None:
    """The name of the one query given (``text=..., image_id=...``; None: not given), or None for a
    query made of ``positive_ids`` alone ("more like these"): one of them must be given, not two."""
    named = [name for name, value in given.items() if value is not None]
    if len(named) > 1 or (not named and not positive_ids):
        raise QueryError(f"give exactly one of {', '.join(given)}, or {positive_name} alone (got {', '.join(named) or 'none'})")
    return named[0] if named else None


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


# --- negatives and examples -------------------------------------------------------------------

# GET's short form: a word or "quoted phrase" after a minus that starts a term (not "t-shirt")
NEGATED = re.compile(r'(?:^|(?<=\s))-(?:"([^"]*)"|([^\s"]\S*))')


@dataclass(frozen=True)
class Examples:
    """What steers a vector query besides the query itself: texts to steer away from (``negative``),
    and indexed images that results should look like (``positive_ids``) or not (``negative_ids``)."""

    negative: tuple[str, ...] = ()
    positive_ids: tuple[str, ...] = ()
    negative_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.negative or self.positive_ids or self.negative_ids)

    @property
    def has_negatives(self) -> bool:
        return bool(self.negative or self.negative_ids)


def examples_from(negative: Sequence[str] | None = None, positive_ids: Sequence[str] | None = None,
                  negative_ids: Sequence[str] | None = None, *, max_each: int, mode: Mode = "vector") -> Examples:
    """The checked examples of a query (None or empty: not given; the same id twice counts once).
    Texts are checked like the query's own when they are encoded."""
    examples = Examples(tuple(negative or ()), *(tuple(dict.fromkeys(ids or ())) for ids in (positive_ids, negative_ids)))
    for name, given in (("negative", examples.negative), ("positive_ids", examples.positive_ids),
                        ("negative_ids", examples.negative_ids)):
        if len(given) > max_each:
            raise QueryError(f"{name} holds {len(given)} entries; the limit is {max_each}")
    for image_id in examples.positive_ids + examples.negative_ids:
        if not is_image_id(image_id):
            raise QueryError(f"not an image id (64 lower-case hex characters): {image_id[:80]!r}")
    if both := set(examples.positive_ids) & set(examples.negative_ids):
        raise QueryError(f"image {min(both)} is in both positive_ids and negative_ids")
    check_steered_mode(examples, mode)
    return examples


def check_steered_mode(examples: Examples | None, mode: Mode) -> None:
    if examples and mode != "vector":
        raise QueryError(f"negatives and examples steer the vector search: mode {mode} cannot use them")


def split_negatives(q: str) -> tuple[str, list[str]]:
    """GET's short form: ``beach -people -"parked cars"`` is the text ``beach`` with the negatives
    ``people`` and ``parked cars``."""
    negatives = [m.group(1) if m.group(1) is not None else m.group(2) for m in NEGATED.finditer(q)]
    text = " ".join(NEGATED.sub(" ", q).split()) if negatives else q
    if negatives and not text:
        raise QueryError("the query has only negatives (-word): say what to look for too")
    return text, negatives


def check_threshold(threshold: float) -> float:
    """A near-duplicate threshold: a cosine from 0.5 (below, most images of a collection are "near") to 1."""
    if not 0.5 <= threshold <= 1.0:
        raise QueryError(f"threshold must be between 0.5 and 1.0, got {threshold}")
    return threshold
