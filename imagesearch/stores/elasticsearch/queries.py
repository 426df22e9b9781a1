"""Translation of the store's queries into Elasticsearch's: filters, kNN, queue states, vectors."""

from __future__ import annotations

import base64

import numpy as np

from imagesearch.records import ImageRecord, SearchFilters, instant
from imagesearch.stores.base import MAX_K
from imagesearch.stores.elasticsearch.mappings import NESTED_VECTORS

MAX_RESULT_WINDOW = MAX_K  # Elasticsearch's limit for k, num_candidates and size; the store contract's cap on k


def filter_clauses(filters: SearchFilters | None) -> list[dict]:
    if filters is None:
        return []
    clauses: list[dict] = []
    if filters.format is not None:
        clauses.append({"terms": {"format": filters.format}})
    if filters.source is not None:
        clauses.append({"terms": {"sources": list(filters.source)}})
    for field in ("width", "height"):
        bounds = {
            op: value
            for op, value in (("gte", getattr(filters, f"min_{field}")), ("lte", getattr(filters, f"max_{field}")))
            if value is not None
        }
        if bounds:
            clauses.append({"range": {field: bounds}})
    clauses += [{"term": {"tags": tag}} for tag in filters.tags or ()]  # every one of them
    return clauses + photo_clauses(filters)


def photo_clauses(filters: SearchFilters) -> list[dict]:
    """The date, camera and place filters (a document without the field passes none of them)."""
    clauses: list[dict] = []
    taken = {op: instant(value).isoformat() for op, value in (("gte", filters.taken_after), ("lt", filters.taken_before))
             if value is not None}
    if taken:
        clauses.append({"range": {"taken_at": taken}})
    if filters.camera_key is not None:
        clauses.append({"term": {"cameras": filters.camera_key}})
    if filters.near is not None and filters.within_km is not None:
        clauses.append({"geo_distance": {"distance": f"{filters.within_km}km", "distance_type": "arc",
                                         "location": {"lat": filters.near.lat, "lon": filters.near.lon}}})
    return clauses


def photo_fields(record: ImageRecord) -> dict:
    """What the photo filters read, beside the record in its images document (mappings.PHOTO_FILTER_FIELDS)."""
    photo = record.photo
    where = photo.location if photo else None
    return {"taken_at": instant(photo.taken_at).isoformat() if photo and photo.taken_at else None,
            "cameras": photo.cameras if photo else [], "location": {"lat": where.lat, "lon": where.lon} if where else None,
            "photo_read": photo is not None}


def knn(vector: np.ndarray, k: int, *, num_candidates: int, rescore_oversample: float, field: str = "vector",
        filters: SearchFilters | None = None, min_score: float | None = None) -> dict:
    """The ``knn`` section of a search for the top ``k`` (k <= MAX_RESULT_WINDOW). On a nested field
    (several vectors per image) Elasticsearch scores each image by its best vector; the filters are
    on the image's own fields either way."""
    body: dict = {"field": field, "query_vector": encode_vector(np.asarray(vector, np.float32).ravel()), "k": k,
                  "num_candidates": min(MAX_RESULT_WINDOW, max(k, num_candidates))}
    if clauses := filter_clauses(filters):
        body["filter"] = clauses
    if rescore_oversample:  # quantized indices: exact float scores and order for the top hits
        body["rescore_vector"] = {"oversample": rescore_oversample}
    if min_score is not None:
        body["similarity"] = min_score  # on the raw dot product, like our scores
    return body


def dot_product(score: float) -> float:
    """``dot_product`` similarity scores come back as (1 + dot) / 2; the store gives the dot product."""
    return 2 * score - 1


def queue_states(write_index: str, model_key: str) -> dict[str, dict]:
    """Queries for the images embedded in ``write_index``, failed for the model, and pending."""
    embedded = {"exists": {"field": f"vec.{write_index}"}}
    failed = {"exists": {"field": f"embed_errors.{model_key}"}}
    return {"embedded": embedded, "failed": failed, "pending": {"bool": {"must_not": [embedded, failed]}}}


def encode_vector(vector: np.ndarray) -> str:
    """Elasticsearch takes float vectors as base64 of big-endian float32: far less JSON than numbers."""
    return base64.b64encode(np.asarray(vector, ">f4").tobytes()).decode()


def vector_source(vector: np.ndarray) -> dict:
    """The vector part of a vector document: ``vector``, or nested ``vectors`` for [Q, D]."""
    if vector.ndim == 1:
        return {"vector": encode_vector(vector)}
    return {NESTED_VECTORS: [{"vector": encode_vector(v)} for v in vector]}


def source_vector(source: dict) -> np.ndarray:
    """``vector_source`` read back: [D] or [Q, D]."""
    if "vector" in source:
        return decode_vector(source["vector"])
    return np.stack([decode_vector(v["vector"]) for v in source[NESTED_VECTORS]])


def decode_vector(value) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), ">f4").astype(np.float32)
    return np.asarray(value, np.float32)
