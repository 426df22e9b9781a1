"""The vector-store interface: image metadata, URL failures and one embedding per image and model
(one vector, or several for BLIP-2, scored by the best).

The store is also the work queue: the downloader writes records, the embed worker asks for the
records that have no vector for the active model and fills them in. Two implementations, chosen by
``IMAGESEARCH_STORE``: ``local`` (SQLite on disk, exact search) and ``elasticsearch`` (HNSW kNN).

Both keep the one contract written in the docstrings of ``base.VectorStore``; ``tests/test_store_contract.py`` runs
the same tests on each. The errors a caller can meet are the two classes in ``base`` (plus ``ValueError``
for a caller's mistake, such as ids and vectors of different lengths).
"""

from __future__ import annotations

from imagesearch.config import Settings
from imagesearch.stores.base import (
    MAX_K,
    StoreUnavailable,
    StoreWriteError,
    VectorStore,
    checked_vectors,
    describe_layout,
    query_vector,
    vector_layout,
)

__all__ = ["MAX_K", "StoreUnavailable", "StoreWriteError", "VectorStore", "checked_vectors", "describe_layout",
           "make_store", "query_vector", "vector_layout"]


def make_store(settings: Settings) -> VectorStore:
    if settings.store == "elasticsearch":
        from imagesearch.stores.elasticsearch import ElasticsearchStore

        return ElasticsearchStore(settings)
    from imagesearch.stores.local import LocalStore

    return LocalStore(settings.data_dir / "store.sqlite3", write_wait_s=settings.dependency_wait_s,
                      index_min_vectors=settings.local_index_min_vectors)
