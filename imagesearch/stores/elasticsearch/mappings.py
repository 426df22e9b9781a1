"""The indices' settings and mappings as plain data (testable without a node)."""

from __future__ import annotations

# The version of the indices' layout, in every mapping's ``_meta``. Raise it with any change that
# indices made by an earlier version cannot serve: the store then refuses those indices (there is
# no upgrade path before the first release) instead of half-working with them.
SCHEMA_KEY = "imagesearch_schema"
SCHEMA_VERSION = 3
SCHEMA_META = {SCHEMA_KEY: SCHEMA_VERSION}

LONG_KEYWORD = 8191  # longer URLs/paths are stored but not indexed (Lucene's term limit is 32k bytes)
KEYWORD = {"type": "keyword"}
# What the photo filters read (queries.photo_fields): in the images index and each vector index.
PHOTO_FILTER_FIELDS = {"taken_at": {"type": "date"}, "cameras": KEYWORD, "location": {"type": "geo_point"}}

# p-images: one document per image, the ImageRecord plus its embedding state per model.
IMAGES = {
    "_meta": SCHEMA_META,
    "dynamic": False,  # fields added to ImageRecord later are kept in _source, just not indexed
    "dynamic_templates": [
        {"vec": {"path_match": "vec.*", "mapping": {"type": "boolean"}}},
        {"embed_errors": {"path_match": "embed_errors.*", "mapping": {"type": "keyword", "ignore_above": 1024}}},
    ],
    "properties": {
        "id": KEYWORD, "urls": {"type": "keyword", "ignore_above": LONG_KEYWORD}, "captions": {"type": "text"},
        "sources": KEYWORD, "paths": {"type": "keyword", "ignore_above": LONG_KEYWORD},
        "width": {"type": "integer"}, "height": {"type": "integer"}, "format": KEYWORD, "bytes": {"type": "long"},
        "first_seen": {"type": "date"}, "last_seen": {"type": "date"},
        "vec": {"type": "object", "dynamic": True}, "embed_errors": {"type": "object", "dynamic": True},
        "keywords": {"type": "text"},  # ImageRecord.keyword_text: captions, tags and file names, for BM25 (mode=text|hybrid)
        **PHOTO_FILTER_FIELDS,
        "photo_read": {"type": "boolean"},  # false: the record's photo metadata was never read
        "tags": KEYWORD,  # ImageRecord.tags: the tag filter and the tag counts
        "tags_key": KEYWORD,  # which tagging gave the tags (absent: never tagged)
    },
}

# p-failures: one document per URL that gave no image.
FAILURES = {
    "_meta": SCHEMA_META,
    "dynamic": False,
    "properties": {
        "url": {"type": "keyword", "ignore_above": LONG_KEYWORD}, "reason": KEYWORD,
        "detail": {"type": "text"}, "caption": {"type": "text"}, "attempts": {"type": "integer"}, "at": {"type": "date"},
    },
}

# p-removed: one document per removed image (the record as it was): its URLs and paths are not
# downloaded or scanned in again unless asked.
REMOVED = {
    "_meta": SCHEMA_META,
    "dynamic": False,
    "properties": {"id": KEYWORD, "urls": {"type": "keyword", "ignore_above": LONG_KEYWORD},
                   "paths": {"type": "keyword", "ignore_above": LONG_KEYWORD}},
}

# The fields of an images document beside the ImageRecord (reads of records leave them out).
NOT_RECORD = ("vec", "embed_errors", "keywords", *PHOTO_FILTER_FIELDS, "photo_read", "tags_key")

# The metadata copied into each vector document, so filters run inside the kNN as a pre-filter.
FILTER_FIELDS = ("format", "sources", "width", "height", *PHOTO_FILTER_FIELDS, "tags")


def index_settings(shards: int, replicas: int) -> dict:
    return {"number_of_shards": shards, "number_of_replicas": replicas}


# A model with several vectors per image (BLIP-2) keeps them as nested documents under this field: a
# nested kNN scores each image by its best-matching vector, the model's own max-over-queries score.
NESTED_VECTORS = "vectors"


def vector_field(vectors_per_image: int) -> str:
    """The ``dense_vector`` field a kNN search targets."""
    return "vector" if vectors_per_image == 1 else f"{NESTED_VECTORS}.vector"


def vector_index(dim: int, *, index_type: str, m: int, ef_construction: int, shards: int, replicas: int,
                 refresh_interval: str, vectors_per_image: int = 1) -> dict:
    """Settings and mappings of a model's vector index (``indices.create(**vector_index(...))``)."""
    vector = {
        "type": "dense_vector", "dims": dim, "index": True, "similarity": "dot_product",
        "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction},
    }
    vectors = {"vector": vector} if vectors_per_image == 1 else {
        NESTED_VECTORS: {"type": "nested", "properties": {"vector": vector}}}
    return {
        "settings": {
            **index_settings(shards, replicas), "refresh_interval": refresh_interval,
            "index.mapping.exclude_source_vectors": True,  # vectors live in the vector index files only
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": {**SCHEMA_META, "dim": dim, "vectors_per_image": vectors_per_image},
            "properties": {
                **vectors,
                "format": KEYWORD, "sources": KEYWORD, "width": {"type": "integer"}, "height": {"type": "integer"},
                **PHOTO_FILTER_FIELDS, "tags": KEYWORD,
            },
        },
    }


def layout(mapping: dict) -> tuple[int, int]:
    """(dim, vectors per image) of a vector index, from the ``_meta`` of its mapping."""
    return mapping["_meta"]["dim"], mapping["_meta"]["vectors_per_image"]


def schema_version(mapping: dict) -> object:
    """The schema version an index was created with (None: not made by this store)."""
    return mapping.get("_meta", {}).get(SCHEMA_KEY)
