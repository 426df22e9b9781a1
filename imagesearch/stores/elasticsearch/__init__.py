"""The Elasticsearch vector store, in parts a reader finds by name:

- ``client``: the connection, errors turned into ``StoreUnavailable``, write retries, bulk and
  optimistic-concurrency writes;
- ``mappings``: every index's settings and mappings as plain data, and their schema version;
- ``indices``: index names, the schema check and the alias lifecycle (a model's vector index,
  rebuild, swap);
- ``queries``: filters, kNN, queue states and vector encoding in Elasticsearch's terms;
- ``metadata``: the image records and URL failures, merged with optimistic concurrency;
- ``removal``: removing images, and the tombstones that keep them out;
- ``tags``: the images' tags, the embedded images still to tag, and the tag counts;
- ``duplicates``: near pairs (near-duplicate images) by kNN queries in msearch batches, and many vectors at once;
- ``store``: ``ElasticsearchStore``, the ``VectorStore`` methods over those.
"""

from imagesearch.stores.elasticsearch.store import ElasticsearchStore

__all__ = ["ElasticsearchStore"]
