"""The request bodies the API accepts (responses are ``imagesearch.search.SearchResponse``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from imagesearch.formats import FORMATS
from imagesearch.records import MAX_K, SearchFilters
from imagesearch.search import Mode, Sort, check_mode, check_one_query
from imagesearch.search.query import Examples, examples_from

MAX_DIMENSION = 1_000_000  # pixel-size filters beyond this can match nothing anyway


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (lone surrogate)") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]


class Filters(SearchFilters):
    """The store's filters with bounds a client cannot overflow (JSON integers are unbounded)."""

    format: list[Literal[tuple(FORMATS)]] | None = Field(None, description="keep only these formats")  # type: ignore[valid-type]
    min_width: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    min_height: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    max_width: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    max_height: int | None = Field(None, ge=0, le=MAX_DIMENSION)


MODEL_HELP = "which served model to search with (slug, as /status lists them); default: the first"
SORT_HELP = ("relevance (the default); newest or oldest: the best IMAGESEARCH_SORT_WINDOW matches by relevance, by the date "
             "they were taken (those without a date last, by relevance)")
OFFSET_HELP = "where the page starts: the next_offset of the page before (offset + k <= 10000)"
COLLAPSE_HELP = ("near-duplicates (a cosine of IMAGESEARCH_DUPLICATE_THRESHOLD or more) of a better result left out, "
                 "deeper results filling the page")
MAX_EXAMPLES = 1000  # what a body may hold at all; IMAGESEARCH_MAX_QUERY_EXAMPLES is the limit a search applies


def filter_help(name: str) -> str | None:
    """A filter's description, as ``SearchFilters`` gives it (query parameters and form fields repeat it)."""
    return SearchFilters.model_fields[name].description


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``image_id`` (an indexed image: "more like this") or ``image_url``, or
    ``positive_ids`` alone ("more like these"); ``negative`` and ``negative_ids`` steer away."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "a red circle", "k": 10}]})
    text: Text | None = Field(None, description="what to look for, in words")
    image_id: Text | None = Field(None, description="id (sha256) of an indexed image: find similar ones")
    image_url: Text | None = Field(None, max_length=4096, description="an image on the web: find similar ones")
    k: int = Field(10, description="how many results (1..IMAGESEARCH_MAX_K, as /status lists it)")
    filters: Filters | None = None
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop results below this cosine")
    mode: Mode = Field("vector", description="with text: vector (by meaning), text (by the words of captions, "
                                             "tags and file names) or hybrid (both, fused by reciprocal rank)")
    model: str | None = Field(None, max_length=200, description=MODEL_HELP)
    sort: Sort = Field("relevance", description=SORT_HELP)
    offset: int = Field(0, ge=0, le=MAX_K, description=OFFSET_HELP)
    negative: list[Text] | None = Field(None, max_length=MAX_EXAMPLES, description=(
        "texts to steer away from: the search uses the mean of the positives minus IMAGESEARCH_NEGATIVE_WEIGHT times "
        "the mean of the negatives (vector mode)"))
    positive_ids: list[Text] | None = Field(None, max_length=MAX_EXAMPLES, description=(
        "ids of indexed images the results should look like, beside the query; alone: more like these"))
    negative_ids: list[Text] | None = Field(None, max_length=MAX_EXAMPLES, description=(
        "ids of indexed images the results should not look like"))
    collapse: bool = Field(False, description=COLLAPSE_HELP)

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:  # QueryError is a ValueError: pydantic reports it as a 422
        check_one_query(self.positive_ids or (), text=self.text, image_id=self.image_id, image_url=self.image_url)
        check_mode(self.mode, self.text is not None)
        return self

    def examples(self, max_each: int) -> Examples:
        """The negatives and examples, checked (``QueryError``: a 400)."""
        return examples_from(self.negative, self.positive_ids, self.negative_ids, max_each=max_each, mode=self.mode)
