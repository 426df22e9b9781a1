"""The image records and URL failures (``p-images``, ``p-failures``): merged writes, and the reads
of records and failures.

Both writes use optimistic concurrency (``EsClient.occ_write``): a document another worker changed
meanwhile is read again and merged again, so concurrent downloaders lose nothing. The vector
documents carry copies of the fields filters read (``FILTER_FIELDS``: filters run inside the kNN),
so a record whose sources grow, or whose photo metadata is read later, has them copied there too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from elasticsearch import helpers

from imagesearch.records import ImageRecord, PhotoMetadata, UrlFailure
from imagesearch.stores.base import StoreUnavailable
from imagesearch.stores.elasticsearch.client import EsClient
from imagesearch.stores.elasticsearch.indices import Indices
from imagesearch.stores.elasticsearch.mappings import FILTER_FIELDS, NOT_RECORD
from imagesearch.stores.elasticsearch.queries import MAX_RESULT_WINDOW, photo_fields


def url_id(url: str) -> str:
    """A failure's document id: its URL may be longer than an id can be."""
    return hashlib.sha256(url.encode()).hexdigest()


def merged_by_id(records: Sequence[ImageRecord]) -> dict[str, ImageRecord]:
    """One record per id: the same image twice in one batch is merged first."""
    batch: dict[str, ImageRecord] = {}
    for record in records:
        batch[record.id] = batch[record.id].merge(record) if record.id in batch else record
    return batch


def image_document(record: ImageRecord, stored: dict | None = None) -> dict:
    """The images document of ``record``: the record, the fields only search reads, and (``stored``)
    what it held beside them (the embedding state)."""
    base = stored if stored is not None else {"vec": {}, "embed_errors": {}}
    return {**base, **record.model_dump(mode="json"), "keywords": record.keyword_text, **photo_fields(record)}


def filter_fields(document: dict) -> dict:
    return {field: document.get(field) for field in FILTER_FIELDS}


def first_new(records: Sequence[ImageRecord], created: set[str]) -> list[bool]:
    """``upsert_images``' answer: True only at the first occurrence of a new id."""
    seen: set[str] = set()
    out = []
    for record in records:
        out.append(record.id in created and record.id not in seen)
        seen.add(record.id)
    return out


class Metadata:
    def __init__(self, client: EsClient, indices: Indices):
        self.client = client
        self.indices = indices

    # --- writes --------------------------------------------------------------------------------

    def upsert_images(self, records: Sequence[ImageRecord]) -> list[bool]:
        batch = merged_by_id(records)
        changed: dict[str, dict] = {}  # id -> its filter fields, where they changed: the vector indices copy them

        def build(stored: dict | None, record: ImageRecord) -> dict | None:
            if stored is None:
                return image_document(record)
            old = ImageRecord.model_validate(stored)
            new = old.merge(record)
            if new == old:
                return None
            document = image_document(new, stored)
            if filter_fields(document) != filter_fields(stored):
                changed[new.id] = filter_fields(document)
            return document

        def run() -> set[str]:
            self.indices.ensure_base()
            created = self.client.occ_write(self.indices.images, batch, build) if batch else set()
            self._drop_failures({u for r in batch.values() for u in r.urls})
            self.client.bulk([{"_op_type": "delete", "_index": self.indices.removed, "_id": i} for i in batch],
                             ignore_status=(404,))  # stored again on purpose: no longer removed
            self.copy_filter_fields(changed)
            return created

        return first_new(records, self.client.write(run))

    def _drop_failures(self, urls: set[str]) -> None:
        """A URL that now has an image is no longer a failure."""
        if not urls:
            return
        docs = self.client.es.mget(index=self.indices.failures, ids=[url_id(u) for u in urls], source=False)["docs"]
        found = [d["_id"] for d in docs if d.get("found")]
        if found:
            self.client.bulk([{"_op_type": "delete", "_index": self.indices.failures, "_id": i} for i in found],
                             ignore_status=(404,))

    def copy_filter_fields(self, fields: dict[str, dict]) -> None:
        """Keep the copies of what filters read in the vector indices in step (id -> its fields)."""
        if not fields:
            return
        actions = [{"_op_type": "update", "_index": index, "_id": i, "doc": doc, "retry_on_conflict": 5}
                   for index in self.indices.vector_indices() for i, doc in fields.items()]
        self.client.bulk(actions, ignore_status=(404,))  # 404: not embedded in that index (yet)

    def set_photo_metadata(self, metadata: dict[str, PhotoMetadata]) -> None:
        changed: dict[str, dict] = {}

        def build(stored: dict | None, photo: PhotoMetadata) -> dict | None:
            if stored is None:
                return None  # removed meanwhile
            document = image_document(ImageRecord.model_validate(stored).model_copy(update={"photo": photo}), stored)
            changed[document["id"]] = filter_fields(document)
            return document

        def run() -> None:
            self.indices.ensure_base()
            if metadata:
                self.client.occ_write(self.indices.images, metadata, build)
                self.copy_filter_fields(changed)

        self.client.write(run)

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

    # --- reads ---------------------------------------------------------------------------------

    def failures(self) -> list[UrlFailure]:
        def run() -> list[UrlFailure]:
            self.indices.ensure_base()
            self.client.es.indices.refresh(index=self.indices.failures)
            hits = helpers.scan(self.client.es, index=self.indices.failures,
                                query={"query": {"match_all": {}}, "sort": ["url"]}, preserve_order=True, size=1000)
            return [UrlFailure.model_validate(h["_source"]) for h in hits]

        return self.client.read(run, patient=True)  # the downloader's question: it may wait

    def known_urls(self, urls: Iterable[str]) -> set[str]:
        urls = list(dict.fromkeys(urls))

        def run() -> set[str]:
            known: set[str] = set()
            self.indices.ensure_base()
            self.client.es.indices.refresh(index=self.indices.images)
            for start in range(0, len(urls), 1000):
                chunk = urls[start : start + 1000]
                hits = self.client.es.search(index=self.indices.images, query={"terms": {"urls": chunk}},
                                             source_includes=["urls"], size=MAX_RESULT_WINDOW)["hits"]["hits"]
                wanted = set(chunk)
                known.update(u for h in hits for u in h["_source"]["urls"] if u in wanted)
            return known

        return self.client.read(run, patient=True)  # the downloader's question: it may wait

    def get(self, image_id: str) -> ImageRecord | None:
        def run() -> ImageRecord | None:
            self.indices.ensure_base()
            found = self.client.es.options(ignore_status=404).get(index=self.indices.images, id=image_id)
            if "error" in found:  # the index itself is gone
                self.indices.forget()
                raise StoreUnavailable(f"index {self.indices.images} is missing at {self.client.url}")
            return ImageRecord.model_validate(found["_source"]) if found.get("found") else None

        return self.client.read(run)

    def photo_metadata_unread(self, limit: int, after: str) -> list[ImageRecord]:
        def run() -> list[ImageRecord]:
            self.indices.ensure_base()
            self.client.es.indices.refresh(index=self.indices.images)  # the ingest's question: exact, not near-real-time
            hits = self.client.es.search(
                index=self.indices.images, query={"bool": {"must_not": {"term": {"photo_read": True}}}},
                sort=[{"id": "asc"}], size=min(limit, MAX_RESULT_WINDOW), source_excludes=list(NOT_RECORD),
                search_after=[after] if after else None)["hits"]["hits"]
            return [ImageRecord.model_validate(h["_source"]) for h in hits]

        return self.client.read(run, patient=True) if limit > 0 else []

    def records(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        """The stored records of ``ids`` (those that have one), without the embedding state."""
        docs = self.client.es.mget(index=self.indices.images, ids=list(ids), source_excludes=list(NOT_RECORD))["docs"]
        return {d["_id"]: ImageRecord.model_validate(d["_source"]) for d in docs if d.get("found")}
