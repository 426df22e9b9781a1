"""Tags in Elasticsearch: each image's tags in its images document (the record's ``tags``, a keyword
field), copied into its vector documents (the tag filter runs inside the kNN), which tagging gave them
(``tags_key``), the embedded images whose tags are missing or came from another tagging, and the counts."""

from __future__ import annotations

import numpy as np

from imagesearch.records import ImageRecord
from imagesearch.stores.elasticsearch import mappings, queries
from imagesearch.stores.elasticsearch.client import EsClient
from imagesearch.stores.elasticsearch.indices import Indices
from imagesearch.stores.elasticsearch.metadata import Metadata, filter_fields, image_document
from imagesearch.stores.elasticsearch.queries import MAX_RESULT_WINDOW


class Tags:
    def __init__(self, client: EsClient, indices: Indices, metadata: Metadata):
        self.client, self.indices, self.metadata = client, indices, metadata

    def set_tags(self, tags: dict[str, list[str]], key: str) -> None:
        changed: dict[str, dict] = {}

        def build(stored: dict | None, image_tags: list[str]) -> dict | None:
            if stored is None:
                return None  # removed meanwhile
            record = ImageRecord.model_validate(stored).model_copy(update={"tags": image_tags})
            document = {**image_document(record, stored), "tags_key": key}
            changed[record.id] = filter_fields(document)
            return document

        def run() -> None:
            self.indices.ensure_base()
            if tags:
                self.client.occ_write(self.indices.images, tags, build)
                self.metadata.copy_filter_fields(changed)

        self.client.write(run)

    def untagged(self, model: str, key: str, limit: int, after: str) -> list[tuple[str, np.ndarray]]:
        def run() -> list[tuple[str, np.ndarray]]:
            self.indices.ensure_base()
            index = self.indices.alias_target(self.indices.aliases(model)[0])  # where get_vector reads
            if index is None:
                return []
            # the ingest's question: exact, not near-real-time
            self.client.es.indices.refresh(index=f"{self.indices.images},{index}")
            query = {"bool": {"filter": [{"exists": {"field": f"vec.{index}"}}], "must_not": [{"term": {"tags_key": key}}]}}
            hits = self.client.es.search(index=self.indices.images, query=query, sort=[{"id": "asc"}], source=False,
                                         size=min(limit, MAX_RESULT_WINDOW), search_after=[after] if after else None)
            ids = [h["_id"] for h in hits["hits"]["hits"]]
            if not ids:
                return []
            found = self.client.es.search(
                index=index, query={"ids": {"values": ids}}, size=len(ids), source_exclude_vectors=False,
                source_includes=["vector", mappings.NESTED_VECTORS])["hits"]["hits"]
            vectors = {h["_id"]: queries.source_vector(h["_source"]) for h in found}
            return [(i, vectors[i]) for i in ids if i in vectors]

        return self.client.read(run, patient=True) if limit > 0 else []

    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        if limit <= 0:
            return []

        def run() -> list[tuple[str, int]]:
            self.indices.ensure_base()
            order = [{"_count": "desc"}, {"_key": "asc"}]
            found = self.client.es.search(index=self.indices.images, size=0, aggs={
                "tags": {"terms": {"field": "tags", "size": min(limit, MAX_RESULT_WINDOW), "order": order}}})
            return [(b["key"], b["doc_count"]) for b in found["aggregations"]["tags"]["buckets"]]

        return self.client.read(run)
