"""Near pairs (``VectorStore.near_pairs``) and many images' vectors at once, in Elasticsearch.

The model's vector index is read a page at a time with its vectors (a scroll: one consistent view of
the index however long the pass takes); each page's vectors go back as kNN queries, all of a page in
one msearch request, so that the cluster answers them side by side and memory here stays a page. Each
request is a read of its own, with the read's deadline: a long pass is many short requests. Images
with several vectors (BLIP-2) are compared by their query vectors, exactly, in memory: a nested kNN
scores an image by its best vector, which is not how near-duplicates compare.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from elasticsearch import ApiError, TransportError

from imagesearch.stores.base import StoreUnavailable, query_vector
from imagesearch.stores.elasticsearch import mappings, queries
from imagesearch.stores.elasticsearch.client import EsClient, reason
from imagesearch.stores.elasticsearch.indices import Indices
from imagesearch.stores.pairs import Pair, Pairs, exact_pairs

PAGE = 256  # vector documents per scroll page, and kNN queries per msearch request
# kNN candidates per query: a near-duplicate is far closer to its image than the other neighbours
# are, so a short candidate list finds it (the searches' es_num_candidates is for text queries).
CANDIDATES = 100
KEEP_SCROLL = "5m"  # how long the scroll waits between two pages (one page's msearch is far shorter)
VECTOR_SOURCE = ["vector", mappings.NESTED_VECTORS]


class Duplicates:
    def __init__(self, client: EsClient, indices: Indices):
        self.client, self.indices = client, indices

    def get_vectors(self, model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        alias = self.indices.aliases(model)[0]
        for start in range(0, len(ids), 1_000):
            chunk = list(ids[start : start + 1_000])

            def run(chunk: list[str] = chunk) -> list[dict]:
                answer = self.client.es.options(ignore_status=404).search(
                    index=alias, query={"ids": {"values": chunk}}, size=len(chunk), source_includes=VECTOR_SOURCE,
                    source_exclude_vectors=False)
                return answer["hits"]["hits"] if answer.meta.status == 200 else []  # no index: no vectors

            found.update({hit["_id"]: queries.source_vector(hit["_source"]) for hit in self.client.read(run)})
        return found

    def near_pairs(self, model: str, threshold: float, neighbours: int, rescore_oversample: float) -> list[Pair]:
        alias = self.indices.aliases(model)[0]
        layout = self.client.read(lambda: self.indices.search_layout(model))
        if layout is None:
            raise StoreUnavailable(f"Elasticsearch at {self.client.url} has no vector index for model {model}: "
                                   "nothing has been embedded with it yet (run `imagesearch ingest`)")
        if layout[1] > 1:  # several vectors per image: their query vectors, exactly
            pages = list(self._pages(alias))
            ids = [image_id for page in pages for image_id, _ in page]
            vectors = np.stack([query_vector(vector) for page in pages for _, vector in page]) if ids else np.zeros((0, 1))
            return exact_pairs(ids, vectors.astype(np.float32), threshold, neighbours)
        found = Pairs()
        for page in self._pages(alias):
            searches: list[dict] = []
            for _, vector in page:
                knn = queries.knn(vector, neighbours + 1, num_candidates=CANDIDATES, rescore_oversample=rescore_oversample,
                                  min_score=threshold)
                searches += [{"index": alias}, {"knn": knn, "size": neighbours + 1, "_source": False}]
            for (image_id, _), answer in zip(page, self._msearch(searches), strict=True):
                if "error" in answer:
                    raise StoreUnavailable(f"Elasticsearch at {self.client.url} failed a kNN search: {reason(answer['error'])}")
                scored = [(hit["_id"], queries.dot_product(hit["_score"])) for hit in answer["hits"]["hits"]]
                found.add(image_id, [(other, score) for other, score in scored if other != image_id and score >= threshold]
                          [:neighbours])
        return found.sorted()

    def _next_page(self, scroll_id: str | None) -> Callable[[], dict]:
        return lambda: self.client.es.scroll(scroll_id=scroll_id, scroll=KEEP_SCROLL).body

    def _msearch(self, searches: list[dict]) -> list[dict]:
        return self.client.read(lambda: self.client.es.msearch(searches=searches)["responses"])

    def _pages(self, alias: str) -> Iterator[list[tuple[str, np.ndarray]]]:
        """The index's (id, vector) pairs, a scroll page at a time."""
        answer: dict = self.client.read(lambda: self.client.es.search(
            index=alias, scroll=KEEP_SCROLL, size=PAGE, sort=["_doc"], source_includes=VECTOR_SOURCE,
            source_exclude_vectors=False).body)
        scroll_id = answer.get("_scroll_id")
        try:
            while hits := answer["hits"]["hits"]:
                yield [(hit["_id"], queries.source_vector(hit["_source"])) for hit in hits]
                answer = self.client.read(self._next_page(scroll_id))
                scroll_id = answer.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                with contextlib.suppress(ApiError, TransportError):  # it expires anyway
                    self.client.es.options(ignore_status=404).clear_scroll(scroll_id=scroll_id)
