"""The tags the indexed images hold, with how many hold each: what `GET /tags` and `imagesearch tags` show."""

from __future__ import annotations

from pydantic import BaseModel, Field

from imagesearch.stores import VectorStore


class TagCount(BaseModel):
    tag: str
    count: int = Field(description="how many images hold it")


class TagCounts(BaseModel):
    tags: list[TagCount] = Field(description="the most held first (ties in alphabetical order)")


def tag_counts(store: VectorStore, limit: int) -> TagCounts:
    return TagCounts(tags=[TagCount(tag=tag, count=count) for tag, count in store.tag_counts(limit)])
