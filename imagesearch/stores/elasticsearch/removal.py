"""Removing images: the tombstones in ``p-removed``, and finding what to remove.

A tombstone keeps a removed image's URLs and paths, so a rerun of the downloader or the folder
scanner does not bring it back unless asked (``upsert_images`` of the same id clears it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from elasticsearch import helpers

from imagesearch.records import ImageRecord
from imagesearch.stores.elasticsearch.client import EsClient
from imagesearch.stores.elasticsearch.indices import Indices
from imagesearch.stores.elasticsearch.metadata import Metadata
from imagesearch.stores.elasticsearch.queries import MAX_RESULT_WINDOW


class Removal:
    def __init__(self, client: EsClient, indices: Indices, metadata: Metadata):
        self.client = client
        self.indices = indices
        self.metadata = metadata

    def remove_images(self, ids: Sequence[str]) -> list[ImageRecord]:
        """In an order a kill cannot spoil: the tombstone first (a rerun finds the id by URL or
        path), then the record (out of the queue: nothing re-embeds it; searches drop hits without
        a record), then its vectors in every vector index."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []

        def run() -> list[ImageRecord]:
            self.indices.ensure_base()
            records = self.metadata.records(ids)
            self.client.bulk([{"_op_type": "index", "_index": self.indices.removed, "_id": i,
                               "_source": {"id": i, "urls": r.urls, "paths": r.paths}} for i, r in records.items()])
            self.client.bulk([{"_op_type": "delete", "_index": self.indices.images, "_id": i} for i in records],
                             ignore_status=(404,))
            self.client.bulk(
                [{"_op_type": "delete", "_index": index, "_id": i} for index in self.indices.vector_indices() for i in ids],
                ignore_status=(404,),
            )  # also those of an earlier, interrupted removal
            self.indices.refresh()
            return list(records.values())

        return self.client.write(run)

    def removed_urls(self, urls: Iterable[str]) -> set[str]:
        return self._removed_values("urls", list(dict.fromkeys(urls)))

    def removed_ids(self, ids: Iterable[str]) -> set[str]:
        return self._removed_values("id", list(dict.fromkeys(ids)))

    def _removed_values(self, field: str, values: list[str]) -> set[str]:
        """Which of ``values`` a tombstone holds in ``field``."""
        def run() -> set[str]:
            self.indices.ensure_base()
            self.client.es.indices.refresh(index=self.indices.removed)
            found: set[str] = set()
            for start in range(0, len(values), 1000):
                chunk = values[start : start + 1000]
                hits = self.client.es.search(index=self.indices.removed, query={"terms": {field: chunk}},
                                             source_includes=[field], size=MAX_RESULT_WINDOW)["hits"]["hits"]
                wanted = set(chunk)
                for hit in hits:
                    value = hit["_source"][field]
                    found.update(v for v in (value if isinstance(value, list) else [value]) if v in wanted)
            return found

        return self.client.read(run, patient=True)

    def find_ids(self, *, url: str | None = None, folder: str | None = None) -> list[str]:
        """The ids of the images, stored or removed, with this URL or under this folder."""
        query = {"term": {"urls": url}} if url is not None else {"prefix": {"paths": str(folder).rstrip("/") + "/"}}

        def run() -> list[str]:
            self.indices.ensure_base()
            both = f"{self.indices.images},{self.indices.removed}"
            self.client.es.indices.refresh(index=both)
            hits = helpers.scan(self.client.es, index=both, query={"query": query}, source=False, size=1000)
            return list(dict.fromkeys(h["_id"] for h in hits))

        return self.client.read(run)
