"""``LocalStore``: the ``VectorStore`` methods over the database and the parts that read and write it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from imagesearch.config import LOCAL_INDEX_MIN_VECTORS
from imagesearch.records import Counts, Hit, ImageRecord, PhotoMetadata, SearchFilters, UrlFailure
from imagesearch.stores.base import MAX_K, StoreWriteError, checked_vectors
from imagesearch.stores.local import embeddings, keywords, metadata, photos, removal
from imagesearch.stores.local import tags as image_tags
from imagesearch.stores.local.database import Database, answers
from imagesearch.stores.local.searchers import Searchers


class LocalStore:
    """The store in one SQLite file at ``path``; the graph indexes' snapshots in ``<path>.index``."""

    def __init__(self, path: Path, write_wait_s: float = 300.0, index_min_vectors: int = LOCAL_INDEX_MIN_VECTORS):
        self.path = Path(path)
        self.database = Database(self.path, write_wait_s)
        self.index_folder = self.path.with_name(self.path.name + ".index")
        self.searchers = Searchers(self.database, self.index_folder, index_min_vectors)

    # --- metadata ----------------------------------------------------------------------------

    @answers
    def upsert_images(self, records: Sequence[ImageRecord]) -> list[bool]:
        with self.database.transaction() as db:
            return metadata.upsert_images(db, records)

    @answers
    def record_failures(self, failures: Sequence[UrlFailure]) -> None:
        with self.database.transaction() as db:
            metadata.record_failures(db, failures)

    @answers
    def failures(self) -> list[UrlFailure]:
        return metadata.failures(self.database.connection())

    @answers
    def known_urls(self, urls: Iterable[str]) -> set[str]:
        return metadata.known_urls(self.database.connection(), list(urls))

    @answers
    def get(self, image_id: str) -> ImageRecord | None:
        return metadata.get(self.database.connection(), image_id)

    @answers
    def photo_metadata_unread(self, limit: int, after: str = "") -> list[ImageRecord]:
        return photos.unread(self.database.connection(), limit, after) if limit > 0 else []

    @answers
    def set_photo_metadata(self, metadata: dict[str, PhotoMetadata]) -> None:
        if metadata:
            with self.database.transaction() as db:
                photos.set_photo_metadata(db, metadata)

    # --- vectors (the embed worker's queue) ----------------------------------------------------

    @answers
    def ensure_model(self, model: str, dim: int, vectors_per_image: int = 1) -> None:
        with self.database.transaction() as db:
            embeddings.ensure_model(db, model, dim, vectors_per_image)

    @answers
    def pending(self, model: str, limit: int, exclude: Sequence[str] = ()) -> list[ImageRecord]:
        return embeddings.pending(self.database.connection(), model, limit, exclude)

    @answers
    def set_vectors(self, model: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = checked_vectors(ids, vectors)
        if not len(ids):
            return
        with self.database.transaction() as db:
            rejected = embeddings.set_vectors(db, model, ids, vectors)
        if rejected:
            raise StoreWriteError(rejected, "the local store")

    @answers
    def set_embed_errors(self, model: str, errors: dict[str, str]) -> None:
        with self.database.transaction() as db:
            rejected = embeddings.set_embed_errors(db, model, errors)
        if rejected:
            raise StoreWriteError(rejected, "the local store")

    @answers
    def get_vector(self, model: str, image_id: str) -> np.ndarray | None:
        return embeddings.get_vector(self.database.connection(), model, image_id)

    @answers
    def get_vectors(self, model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return embeddings.get_vectors(self.database.connection(), model, list(ids))

    # --- tags ----------------------------------------------------------------------------------

    @answers
    def untagged(self, model: str, key: str, limit: int, after: str = "") -> list[tuple[str, np.ndarray]]:
        return image_tags.untagged(self.database.connection(), model, key, limit, after)

    @answers
    def set_tags(self, tags: dict[str, list[str]], key: str) -> None:
        if tags:
            with self.database.transaction() as db:
                image_tags.set_tags(db, tags, key)

    @answers
    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        return image_tags.tag_counts(self.database.connection(), min(limit, MAX_K)) if limit > 0 else []

    # --- removal -------------------------------------------------------------------------------

    @answers
    def remove_images(self, ids: Sequence[str]) -> list[ImageRecord]:
        with self.database.transaction() as db:
            return removal.remove_images(db, ids)

    @answers
    def removed_urls(self, urls: Iterable[str]) -> set[str]:
        return removal.removed_urls(self.database.connection(), list(urls))

    @answers
    def removed_ids(self, ids: Iterable[str]) -> set[str]:
        return removal.removed_ids(self.database.connection(), list(ids))

    @answers
    def find_ids(self, *, url: str | None = None, folder: str | None = None) -> list[str]:
        return removal.find_ids(self.database.connection(), url, folder)

    # --- queries -------------------------------------------------------------------------------

    @answers
    def search(self, model: str, vector: np.ndarray, k: int,
               filters: SearchFilters | None = None, min_score: float | None = None) -> list[Hit]:
        scored = self.searchers.search(model, vector, k, filters)
        kept = [(i, score) for i, score in scored if min_score is None or score >= min_score]
        records = metadata.get_many(self.database.connection(), [i for i, _ in kept]) if kept else {}
        # model_construct: the store's own values, checked already (a date sort reads a thousand of them)
        return [Hit.model_construct(id=i, score=score, record=records[i]) for i, score in kept if i in records]

    @answers
    def near_pairs(self, model: str, threshold: float, neighbours: int) -> list[tuple[str, str, float]]:
        return self.searchers.near_pairs(model, threshold, neighbours)

    @answers
    def keyword_search(self, text: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        return keywords.keyword_search(self.database.connection(), text, k, filters)

    @answers
    def counts(self, model: str) -> Counts:
        return embeddings.counts(self.database.connection(), model)

    @answers
    def refresh(self) -> None:
        """Every committed write is visible to the next search already. This brings the graph
        indexes up to date and saves them, so that the next process to open the store (the API)
        starts from them instead of catching up or building one (ingest calls it when it ends)."""
        self.searchers.save_indexes()

    def health(self) -> dict:
        try:
            self.database.connection().execute("SELECT 1 FROM images LIMIT 1").fetchall()
            return {"ok": True, "backend": "local", "path": str(self.path)}
        except Exception as exc:  # noqa: BLE001 - health never raises
            return {"ok": False, "backend": "local", "path": str(self.path), "error": str(exc)}

    def close(self) -> None:
        self.database.close()
