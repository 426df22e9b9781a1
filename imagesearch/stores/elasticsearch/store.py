"""``ElasticsearchStore``: the ``VectorStore`` methods over the client, indices and query parts.

Writes are bulk requests keyed by the content hash, so re-runs and concurrent workers never
duplicate. ``p-images`` is the work queue: ``pending(model)`` = the documents with neither
``vec.<write index>`` nor ``embed_errors.<model>``. Switching model therefore re-embeds every stored
image, and nothing is downloaded again.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

import numpy as np
from elasticsearch import Elasticsearch, helpers

from imagesearch.config import Settings
from imagesearch.records import Counts, Hit, ImageRecord, SearchFilters, UrlFailure
from imagesearch.stores.base import StoreUnavailable, StoreWriteError, checked_vectors, describe_layout, vector_layout
from imagesearch.stores.elasticsearch import mappings, queries
from imagesearch.stores.elasticsearch.client import EsClient
from imagesearch.stores.elasticsearch.indices import Indices, name_key
from imagesearch.stores.elasticsearch.mappings import FILTER_FIELDS
from imagesearch.stores.elasticsearch.queries import MAX_RESULT_WINDOW

NOT_RECORD = ("vec", "embed_errors", "keywords")  # fields of an images document beside the ImageRecord


def url_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class ElasticsearchStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = EsClient(settings)
        self.url = self.client.url
        self.indices = Indices(self.client)

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
        batch: dict[str, ImageRecord] = {}
        for record in records:  # the same image twice in one batch: merge first
            batch[record.id] = batch[record.id].merge(record) if record.id in batch else record
        grown: dict[str, list] = {}  # ids whose sources changed: the vector indices copy them

        def build(stored: dict | None, record: ImageRecord) -> dict | None:
            if stored is None:
                return {**record.model_dump(mode="json"), "vec": {}, "embed_errors": {}, "keywords": record.keyword_text}
            old = ImageRecord.model_validate(stored)
            new = old.merge(record)
            if new == old and "keywords" in stored:
                return None
            if new.sources != old.sources:
                grown[new.id] = new.sources
            return {**stored, **new.model_dump(mode="json"), "keywords": new.keyword_text}

        def run() -> set[str]:
            self.indices.ensure_base()
            created = self.client.occ_write(self.indices.images, batch, build) if batch else set()
            self._drop_failures({u for r in batch.values() for u in r.urls})
            self.client.bulk([{"_op_type": "delete", "_index": self.indices.removed, "_id": i} for i in batch],
                             ignore_status=(404,))  # stored again on purpose: no longer removed
            if grown:
                self._copy_sources(grown)
            return created

        created = self.client.write(run)
        seen: set[str] = set()
        out = []
        for record in records:  # True only at the first occurrence of a new id
            out.append(record.id in created and record.id not in seen)
            seen.add(record.id)
        return out

    def _drop_failures(self, urls: set[str]) -> None:
        """A URL that now has an image is no longer a failure."""
        if not urls:
            return
        docs = self.es.mget(index=self.indices.failures, ids=[url_id(u) for u in urls], source=False)["docs"]
        found = [d["_id"] for d in docs if d.get("found")]
        if found:
            self.client.bulk([{"_op_type": "delete", "_index": self.indices.failures, "_id": i} for i in found],
                             ignore_status=(404,))

    def _copy_sources(self, sources: dict[str, list[str]]) -> None:
        """Keep the ``sources`` copies in the vector indices (the ``source`` filter) in step."""
        indices = list(self.es.indices.get_alias(index=f"{self.indices.vectors_prefix}*", allow_no_indices=True).body)
        actions = [{"_op_type": "update", "_index": index, "_id": i, "doc": {"sources": s}, "retry_on_conflict": 5}
                   for index in indices for i, s in sources.items()]
        self.client.bulk(actions, ignore_status=(404,))  # 404: not embedded in that index (yet)

    def record_failures(self, failures: Sequence[UrlFailure]) -> None:
        batch: dict[str, UrlFailure] = {}
        for failure in failures:  # attempts add up, the latest reason wins
            key = url_id(failure.url)
            if key in batch:
                failure = failure.model_copy(update={"attempts": batch[key].attempts + failure.attempts})
            batch[key] = failure

        def build(stored: dict | None, failure: UrlFailure) -> dict:
            attempts = failure.attempts + (stored.get("attempts", 0) if stored else 0)
            return failure.model_copy(update={"attempts": attempts}).model_dump(mode="json")

        def run() -> None:
            self.indices.ensure_base()
            if batch:
                self.client.occ_write(self.indices.failures, batch, build)

        self.client.write(run)

    def failures(self) -> list[UrlFailure]:
        def run() -> list[UrlFailure]:
            self.indices.ensure_base()
            self.es.indices.refresh(index=self.indices.failures)
            hits = helpers.scan(self.es, index=self.indices.failures, query={"query": {"match_all": {}}, "sort": ["url"]},
                                preserve_order=True, size=1000)
            return [UrlFailure.model_validate(h["_source"]) for h in hits]

        return self.client.read(run, patient=True)  # the downloader's question: it may wait

    def known_urls(self, urls: Iterable[str]) -> set[str]:
        urls = list(dict.fromkeys(urls))

        def run() -> set[str]:
            known: set[str] = set()
            self.indices.ensure_base()
            self.es.indices.refresh(index=self.indices.images)
            for start in range(0, len(urls), 1000):
                chunk = urls[start : start + 1000]
                hits = self.es.search(index=self.indices.images, query={"terms": {"urls": chunk}}, source_includes=["urls"],
                                      size=MAX_RESULT_WINDOW)["hits"]["hits"]
                wanted = set(chunk)
                known.update(u for h in hits for u in h["_source"]["urls"] if u in wanted)
            return known

        return self.client.read(run, patient=True)  # the downloader's question: it may wait

    def get(self, image_id: str) -> ImageRecord | None:
        def run() -> ImageRecord | None:
            self.indices.ensure_base()
            found = self.es.options(ignore_status=404).get(index=self.indices.images, id=image_id)
            if "error" in found:  # the index itself is gone
                self.indices.forget()
                raise StoreUnavailable(f"index {self.indices.images} is missing at {self.url}")
            return ImageRecord.model_validate(found["_source"]) if found.get("found") else None

        return self.client.read(run)

    def _records(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        docs = self.es.mget(index=self.indices.images, ids=list(ids), source_excludes=list(NOT_RECORD))["docs"]
        return {d["_id"]: ImageRecord.model_validate(d["_source"]) for d in docs if d.get("found")}

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
                return {i: f"{describe_layout(*given)}, but model {model} is stored with {describe_layout(*stored)}" for i in by_id}
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
            # An upsert that merged new sources while we copied the old ones found no vector doc to update; catch up.
            stale = {i: f["sources"] for i, f in filter_fields(written).items() if f.get("sources") != fields[i].get("sources")}
            if stale:
                self.client.bulk([{"_op_type": "update", "_index": index, "_id": i, "doc": {"sources": s}} for i, s in stale.items()])
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

    # --- removal -----------------------------------------------------------------------------

    def remove_images(self, ids: Sequence[str]) -> list[ImageRecord]:
        """In an order a kill cannot spoil: the tombstone first (a rerun finds the id by URL or
        path), then the record (out of the queue: nothing re-embeds it; searches drop hits without
        a record), then its vectors in every vector index."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []

        def run() -> list[ImageRecord]:
            self.indices.ensure_base()
            records = self._records(ids)
            self.client.bulk([{"_op_type": "index", "_index": self.indices.removed, "_id": i,
                               "_source": {"id": i, "urls": r.urls, "paths": r.paths}} for i, r in records.items()])
            self.client.bulk([{"_op_type": "delete", "_index": self.indices.images, "_id": i} for i in records],
                             ignore_status=(404,))
            vector_indices = list(self.es.indices.get_alias(index=f"{self.indices.vectors_prefix}*", allow_no_indices=True).body)
            self.client.bulk([{"_op_type": "delete", "_index": index, "_id": i} for index in vector_indices for i in ids],
                             ignore_status=(404,))  # also those of an earlier, interrupted removal
            self.indices.refresh()
            return list(records.values())

        return self.client.write(run)

    def removed_urls(self, urls: Iterable[str]) -> set[str]:
        return self._removed_values("urls", list(dict.fromkeys(urls)))

    def removed_ids(self, ids: Iterable[str]) -> set[str]:
        return self._removed_values("id", list(dict.fromkeys(ids)))

    def _removed_values(self, field: str, values: list[str]) -> set[str]:
        def run() -> set[str]:
            self.indices.ensure_base()
            self.es.indices.refresh(index=self.indices.removed)
            found: set[str] = set()
            for start in range(0, len(values), 1000):
                chunk = values[start : start + 1000]
                hits = self.es.search(index=self.indices.removed, query={"terms": {field: chunk}},
                                      source_includes=[field], size=MAX_RESULT_WINDOW)["hits"]["hits"]
                wanted = set(chunk)
                for hit in hits:
                    value = hit["_source"][field]
                    found.update(v for v in (value if isinstance(value, list) else [value]) if v in wanted)
            return found

        return self.client.read(run, patient=True)

    def find_ids(self, *, url: str | None = None, folder: str | None = None) -> list[str]:
        query = {"term": {"urls": url}} if url is not None else {"prefix": {"paths": str(folder).rstrip("/") + "/"}}

        def run() -> list[str]:
            self.indices.ensure_base()
            self.es.indices.refresh(index=f"{self.indices.images},{self.indices.removed}")
            hits = helpers.scan(self.es, index=f"{self.indices.images},{self.indices.removed}", query={"query": query},
                                source=False, size=1000)
            return list(dict.fromkeys(h["_id"] for h in hits))

        return self.client.read(run)

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
            return found, self._records([h["_id"] for h in found]) if found else {}

        found, records = self.client.read(run)
        return [Hit(id=h["_id"], score=queries.dot_product(h["_score"]), record=records[h["_id"]])
                for h in found if h["_id"] in records]

    def keyword_search(self, text: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        if k <= 0 or not text.strip():
            return []

        def run() -> list[dict]:
            self.indices.ensure_base()
            query = {"bool": {"must": {"match": {"keywords": {"query": text}}}, "filter": queries.filter_clauses(filters)}}
            return self.es.search(index=self.indices.images, query=query, size=min(k, MAX_RESULT_WINDOW),
                                  source_excludes=list(NOT_RECORD))["hits"]["hits"]

        return [Hit(id=h["_id"], score=h["_score"], record=ImageRecord.model_validate(h["_source"])) for h in self.client.read(run)]

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
