"""The embedded vector store: one SQLite database on disk (WAL), searched in memory.

SQLite is the one source of truth: crash-safe, and readable by other processes (the API) while
ingest writes. What is in memory is rebuilt from it. Up to ``index_min_vectors`` vectors of a model
search is exact over a float32 matrix; from there on a model with one vector per image is searched
through an HNSW graph index saved beside the database, its candidates rescored exactly (several
vectors per image, BLIP-2, stay exact). bench/bench_store.py measures both.

The parts, each with one job:

- ``database``: the schema and its version, per-thread connections, the waiting write transaction,
  SQLite errors as ``StoreUnavailable``, and ``select_in`` for asking for many keys at once;
- ``metadata``: image records, their URLs and the URLs that failed;
- ``embeddings``: the embed worker's queue (models, vectors, embed errors, what is pending, counts);
- ``removal``: removing images and remembering them, finding ids by URL or folder;
- ``matrix``: exact search over a model's vectors held in memory;
- ``vector_index``: the usearch HNSW index and its snapshots on disk;
- ``graph``: a model's graph index opened, built, caught up, and searched with exact rescoring;
- ``searchers``: which of the two searches each model, kept caught up with SQLite;
- ``duplicates``: near pairs (near-duplicate images) through the graph index in batches, or exactly;
- ``filters``: search filters as SQL; ``keywords``: FTS5 keyword search; ``tags``: tags, tagging's queue, counts;
- ``store``: ``LocalStore``, the ``VectorStore`` methods over those.
"""

from imagesearch.stores.local.store import LocalStore

__all__ = ["LocalStore"]
