"""Results sorted by date, and pages: one implementation over any store's top N.

Relevance pages are slices of the store's top ``offset + k`` (and one more, which says whether a
next page exists). Date order is over a fixed window, the best ``sort_window`` matches by
relevance, so that every page of one query slices the same ordered list: page 2 continues page 1
with no overlap and no gap. Images without a date come after the dated ones, in relevance order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from imagesearch.records import MAX_K, instant
from imagesearch.search.query import Sort

Item = TypeVar("Item")


def depth(sort: Sort, offset: int, k: int, window: int) -> int:
    """How many of the best matches by relevance a page needs from the store."""
    if sort == "relevance":
        return min(offset + k + 1, MAX_K)  # one more than the page: is there a next one?
    return window


def page(items: Sequence[Item], sort: Sort, offset: int, k: int,
         taken_at: Callable[[Item], datetime | None]) -> tuple[list[Item], int | None]:
    """The page of ``items`` (best first by relevance) in ``sort`` order, and where the next page
    starts (None: this is the last). ``taken_at``: an item's date, or None."""
    ordered = list(items)
    if sort != "relevance":
        dated = [(when, item) for item in ordered if (when := taken_at(item)) is not None]
        # sorted() is stable, also reversed: equal dates keep their order by relevance
        dated.sort(key=lambda pair: instant(pair[0]), reverse=sort == "newest")
        ordered = [item for _, item in dated] + [item for item in ordered if taken_at(item) is None]
    end = offset + k
    return ordered[offset:end], end if len(ordered) > end else None
