"""Search: query (text, image bytes, or a stored image id; stored images as examples, texts and images
as negatives) -> encoder -> vector store -> results; and the groups of near-duplicate images.

The API, the CLI and the UI (through the API) all search through ``SearchService``. Text queries
go through an LRU cache (repeated queries skip the encoder) and a micro-batcher (concurrent queries
share one encoder call instead of queuing one by one).
"""

from __future__ import annotations

from imagesearch.search.batcher import TextBatcher
from imagesearch.search.cache import VectorCache
from imagesearch.search.fusion import RRF_K, fuse
from imagesearch.search.query import Mode, QueryError, Sort, check_mode, check_one_query, filters_from
from imagesearch.search.results import SearchResponse, SearchResult, to_result
from imagesearch.search.service import SearchService

__all__ = ["RRF_K", "Mode", "QueryError", "SearchResponse", "SearchResult", "SearchService", "Sort", "TextBatcher",
           "VectorCache", "check_mode", "check_one_query", "filters_from", "fuse", "to_result"]
