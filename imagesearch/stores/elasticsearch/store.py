"""``ElasticsearchStore``: the ``VectorStore`` methods over the client, indices, metadata, removal
and query parts.

Writes are bulk requests keyed by the content hash, so re-runs and concurrent workers never
duplicate. ``p-images`` is the work queue: ``pending(model)`` = the documents with neither
``vec.<write index>`` nor ``embed_errors.<model>``. Switching model therefore re-embeds every stored
image, and nothing is downloaded again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch

from imagesearch.config import Settings
from imagesearch.records import Counts, Hit, ImageRecord, PhotoMetadata, SearchFilters, UrlFailure
from imagesearch.stores.base import StoreWriteError, checked_vectors, describe_layout, vector_layout
from imagesearch.stores.elasticsearch import mappings, queries
from imagesearch.stores.elasticsearch.client import EsClient
from imagesearch.stores.elasticsearch.duplicates import Duplicates
from imagesearch.stores.elasticsearch.indices import Indices, name_key
from imagesearch.stores.elasticsearch.mappings import FILTER_FIELDS, NOT_RECORD
from imagesearch.stores.elasticsearch.metadata import Metadata
from imagesearch.stores.elasticsearch.queries import MAX_RESULT_WINDOW
from imagesearch.stores.elasticsearch.removal import Removal
from imagesearch.stores.elasticsearch.tags import Tags


class ElasticsearchStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = EsClient(settings)
        self.url = self.client.url
        self.indices = Indices(self.client)
        self.metadata = Metadata(self.client, self.indices)
        self.removal = Removal(self.client, self.indices, self.metadata)
        self.tags = Tags(self.client, self.indices, self.metadata)
        self.duplicates = Duplicates(self.client, self.indices)

    @property
    def es(self) -> Elasticsearch:
        """The official client, for what the store does not wrap (within a read: with its deadline)."""
        return self.client.es

    # --- index lifecycle (`imagesearch index ...`) -------------------------------------------

    def ensure_model(self, model: str, dim: int, vectors_per_image: int = 1) -> None:
        self.client.write(lambda: self.indices.ensure_model(model, dim, vectors_per_image))

    def begin_rebuild(self, model: str, dim: int, index_type: str | None = None,
                      m: int | None = None, ef_construction: int | None = None, vectors_per_image: int = 1) -> str:
        """See ``Indices.begin_rebuild``; returns the new index."""
        return self.client.write(
            lambda: self.indices.begin_rebuild(model, dim, index_type, m, ef_construction, vectors_per_image))

    def swap(self, model: str, force: bool = False) -> str:
        """See ``Indices.swap``; returns the index searches now read."""
        return self.client.write(lambda: self.indices.swap(model, force))

    def merge(self, model: str) -> dict:
        """See ``Indices.merge``."""
        return self.client.write(lambda: self.indices.merge(model))

    def index_status(self, model: str) -> dict:
        def run() -> dict:
            self.indices.ensure_base()
            return self.indices.status(model)

        return self.client.read(run)

    def refresh(self) -> None:
        """Make every write visible to searches now (tests and benchmarks; normally within ``es_refresh_interval``)."""
        self.client.read(self.indices.refresh)

    # --- metadata ----------------------------------------------------------------------------

    def upsert_images(self, records: Sequence[ImageRecord]) -> list[bool]:
        return self.metadata.upsert_images(records)

    def record_failures(self, failures: Sequence[UrlFailure]) -> None:
        self.metadata.record_failures(failures)

    def failures(self) -> list[UrlFailure]:
        return self.metadata.failures()

    def known_urls(self, urls: Iterable[str]) -> set[str]:
        return self.metadata.known_urls(urls)

    def get(self, image_id: str) -> ImageRecord | None:
        return self.metadata.get(image_id)

    def photo_metadata_unread(self, limit: int, after: str = "") -> list[ImageRecord]:
        return self.metadata.photo_metadata_unread(limit, after)

    def set_photo_metadata(self, metadata: dict[str, PhotoMetadata]) -> None:
        self.metadata.set_photo_metadata(metadata)

    # --- vectors -----------------------------------------------------------------------------

    def pending(self, model: str, limit: int, exclude: Sequence[str] = ()) -> list[ImageRecord]:
        if limit <= 0:
            return []

        def run() -> list[ImageRecord]:
            self.indices.ensure_base()
            self.es.indices.refresh(index=self.indices.images)  # the queue must be exact, not near-real-time
            query = {"bool": {"filter": [self.indices.queue_states(model)["pending"]],
                              "must_not": [{"ids": {"values": list(exclude)}}] if exclude else []}}
            hits = self.es.search(index=self.indices.images, query=query, size=min(limit, MAX_RESULT_WINDOW),
                                  sort=[{"first_seen": "asc"}, {"id": "asc"}], source_excludes=list(NOT_RECORD))
            return [ImageRecord.model_validate(h["_source"]) for h in hits["hits"]["hits"]]

        return self.client.read(run, patient=True)  # the embed worker's queue: it waits, like its writes

    def set_vectors(self, model: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = checked_vectors(ids, vectors)
        if not len(ids):
            return
        by_id = dict(zip(ids, vectors, strict=True))  # the last vector wins for an id given twice
        images = self.indices.images

        def filter_fields(ids: Iterable[str]) -> dict[str, dict]:
            if not (ids := list(ids)):
                return {}
            docs = self.es.mget(index=images, ids=ids, source_includes=list(FILTER_FIELDS))
            return {d["_id"]: d["_source"] for d in docs["docs"] if d.get("found")}

        given = vector_layout(vectors)

        def run() -> dict[str, str]:
            index = self.indices.alias_target(self.indices.aliases(model)[1]) or self.indices.ensure_model(model, *given)
            if (stored := self.indices.layout(index)) != given:
                return {
                    i: f"{describe_layout(*given)}, but model {model} is stored with {describe_layout(*stored)}" for i in by_id
                }
            fields = filter_fields(by_id)
            rejected = {i: "no image record with this id" for i in by_id if i not in fields}
            _, failed = self.client.bulk([
                {"_op_type": "index", "_index": index, "_id": i, "_source": {**queries.vector_source(v), **fields[i]}}
                for i, v in by_id.items() if i in fields
            ])
            rejected.update({i: why for i, (_, why) in failed.items()})
            written = [i for i in fields if i not in rejected]
            _, failed = self.client.bulk([  # mark them done in the queue (partial update: other fields untouched)
                {"_op_type": "update", "_index": images, "_id": i, "retry_on_conflict": 5,
                 "doc": {"vec": {index: True}, "embed_errors": {name_key(model): None}}}  # a vector clears an old error
                for i in written
            ])
            rejected.update({i: why for i, (_, why) in failed.items()})
            # A write that changed a record's filter fields (sources merged, photo metadata read) while we
            # copied the old ones found no vector doc to update; catch up.
            stale = {i: f for i, f in filter_fields(written).items() if f != fields[i]}
            if stale:
                self.client.bulk([{"_op_type": "update", "_index": index, "_id": i, "doc": f} for i, f in stale.items()])
            return rejected

        if rejected := self.client.write(run):
            raise StoreWriteError(rejected, "Elasticsearch")

    def set_embed_errors(self, model: str, errors: dict[str, str]) -> None:
        if not errors:
            return
        key = name_key(model)

        def run() -> dict[str, tuple[int, str]]:
            self.indices.ensure_base()
            return self.client.bulk([
                {"_op_type": "update", "_index": self.indices.images, "_id": i, "doc": {"embed_errors": {key: reason}},
                 "retry_on_conflict": 5}
                for i, reason in errors.items()
            ])[1]

        if failed := self.client.write(run):
            raise StoreWriteError({i: why for i, (_, why) in failed.items()}, "Elasticsearch")

    def get_vector(self, model: str, image_id: str) -> np.ndarray | None:
        def run() -> np.ndarray | None:
            found = self.es.options(ignore_status=404).get(
                index=self.indices.aliases(model)[0], id=image_id, source_includes=["vector", mappings.NESTED_VECTORS],
                source_exclude_vectors=False)
            if found.meta.status != 200 or not found.get("found"):
                return None  # no such vector, or no index for the model at all
            return queries.source_vector(found["_source"])

        return self.client.read(run)

    def get_vectors(self, model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.duplicates.get_vectors(model, ids)

    # --- tags --------------------------------------------------------------------------------

    def untagged(self, model: str, key: str, limit: int, after: str = "") -> list[tuple[str, np.ndarray]]:
        return self.tags.untagged(model, key, limit, after)

    def set_tags(self, tags: dict[str, list[str]], key: str) -> None:
        self.tags.set_tags(tags, key)

    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        return self.tags.tag_counts(limit)

    # --- removal -----------------------------------------------------------------------------

    def remove_images(self, ids: Sequence[str]) -> list[ImageRecord]:
        return self.removal.remove_images(ids)

    def removed_urls(self, urls: Iterable[str]) -> set[str]:
        return self.removal.removed_urls(urls)

    def removed_ids(self, ids: Iterable[str]) -> set[str]:
        return self.removal.removed_ids(ids)

    def find_ids(self, *, url: str | None = None, folder: str | None = None) -> list[str]:
        return self.removal.find_ids(url=url, folder=folder)

    # --- queries -----------------------------------------------------------------------------

    def search(self, model: str, vector: np.ndarray, k: int,
               filters: SearchFilters | None = None, min_score: float | None = None) -> list[Hit]:
        if k <= 0:
            return []
        k = min(k, MAX_RESULT_WINDOW)

        def run() -> tuple[list[dict], dict[str, ImageRecord]]:
            layout = self.indices.search_layout(model)  # None: no index; the search below says so
            knn = queries.knn(vector, k, field=mappings.vector_field(layout[1] if layout else 1),
                              num_candidates=self.settings.es_num_candidates,
                              rescore_oversample=self.settings.es_rescore_oversample, filters=filters, min_score=min_score)
            found = self.es.search(index=self.indices.aliases(model)[0], knn=knn, size=k, source=False)["hits"]["hits"]
            return found, self.metadata.records([h["_id"] for h in found]) if found else {}

        found, records = self.client.read(run)
        return [Hit(id=h["_id"], score=queries.dot_product(h["_score"]), record=records[h["_id"]])
                for h in found if h["_id"] in records]

    def near_pairs(self, model: str, threshold: float, neighbours: int) -> list[tuple[str, str, float]]:
        return self.duplicates.near_pairs(model, threshold, neighbours, self.settings.es_rescore_oversample)

    def keyword_search(self, text: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        if k <= 0 or not text.strip():
            return []

        def run() -> list[dict]:
            self.indices.ensure_base()
            query = {"bool": {"must": {"match": {"keywords": {"query": text}}}, "filter": queries.filter_clauses(filters)}}
            return self.es.search(index=self.indices.images, query=query, size=min(k, MAX_RESULT_WINDOW),
                                  source_excludes=list(NOT_RECORD))["hits"]["hits"]

        return [
            Hit(id=h["_id"], score=h["_score"], record=ImageRecord.model_validate(h["_source"])) for h in self.client.read(run)
        ]

    def counts(self, model: str) -> Counts:
        def run() -> tuple[Any, Any]:
            self.indices.ensure_base()
            self.es.indices.refresh(index=f"{self.indices.images},{self.indices.failures}")
            images = self.es.search(index=self.indices.images, size=0, track_total_hits=True,
                                    aggs={"state": {"filters": {"filters": self.indices.queue_states(model)}}})
            failed = self.es.search(index=self.indices.failures, size=0, track_total_hits=True,
                                    aggs={"reasons": {"terms": {"field": "reason", "size": 100}}})
            return images, failed

        images, failed = self.client.read(run)
        state = {name: bucket["doc_count"] for name, bucket in images["aggregations"]["state"]["buckets"].items()}
        by_reason = {b["key"]: b["doc_count"] for b in failed["aggregations"]["reasons"]["buckets"]}
        return Counts(images=images["hits"]["total"]["value"], embedded=state["embedded"], pending=state["pending"],
                      embed_failed=state["failed"], failed_urls=failed["hits"]["total"]["value"], failed_by_reason=by_reason)

    def health(self) -> dict:
        out = {"ok": False, "backend": "elasticsearch", "url": self.url}
        try:
            cluster = self.es.options(request_timeout=5).cluster.health()
            out.update(cluster=cluster["cluster_name"], status=cluster["status"], nodes=cluster["number_of_nodes"])
            out["images_index"] = bool(self.es.indices.exists(index=self.indices.images))
            if self.settings.model:  # "index missing" is said here; searches then answer 503
                out["model_index"] = self.indices.alias_target(self.indices.aliases(self.settings.model)[0])
            out["ok"] = cluster["status"] in ("green", "yellow")
        except Exception as exc:  # noqa: BLE001 - health never raises
            out["error"] = f"Elasticsearch at {self.url}: {type(exc).__name__}"
        return out

    def close(self) -> None:
        self.client.close()
