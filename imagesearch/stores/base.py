"""The vector-store contract (``VectorStore``), its errors and the argument checks both stores share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from imagesearch.records import MAX_K as MAX_K  # the contract's cap on k; defined with the records, which settings read too
from imagesearch.records import Counts, Hit, ImageRecord, PhotoMetadata, SearchFilters, UrlFailure


class StoreUnavailable(RuntimeError):
    """The store cannot answer (server down, database locked, index missing). Safe to retry later."""


class StoreWriteError(RuntimeError):
    """The store rejected some items of a write (not retryable); the others were written.
    ``failures`` maps each rejected id to the reason."""

    def __init__(self, failures: dict[str, str], backend: str = "the store"):
        self.failures = failures
        sample = "; ".join(f"{key}: {reason}" for key, reason in list(failures.items())[:5])
        super().__init__(f"{len(failures)} item(s) rejected by {backend}: {sample}")


def checked_vectors(ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as contiguous float32, one entry per id: [N, D], or [N, Q, D] for a model with
    several vectors per image (``set_vectors``' argument check)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim not in (2, 3) or len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but vectors of shape {vectors.shape}")
    return vectors


def vector_layout(vectors: np.ndarray) -> tuple[int, int]:
    """(dim, vectors per image) of a checked [N, D] or [N, Q, D] batch."""
    return (vectors.shape[2], vectors.shape[1]) if vectors.ndim == 3 else (vectors.shape[1], 1)


def describe_layout(dim: int, vectors_per_image: int) -> str:
    return f"{dim}-d vectors" if vectors_per_image == 1 else f"{vectors_per_image} {dim}-d vectors per image"


def query_vector(vector: np.ndarray) -> np.ndarray:
    """An image's embedding as one query vector: itself, or for a model with several vectors per image
    ([Q, D], BLIP-2) their mean, normalized: the direction they share, as search by example uses it."""
    vector = np.asarray(vector, np.float32)
    if vector.ndim == 1:
        return vector
    mean = vector.reshape(-1, vector.shape[-1]).mean(0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


@runtime_checkable
class VectorStore(Protocol):
    # --- metadata (written by the downloader / folder scanner) ---------------------------------
    def upsert_images(self, records: Sequence[ImageRecord]) -> list[bool]:
        """Insert, or merge into the existing record with the same id; True where the id was new.
        A URL that now has an image loses its failure entry."""

    def record_failures(self, failures: Sequence[UrlFailure]) -> None:
        """Remember why URLs gave no image (attempts add up across runs)."""

    def failures(self) -> list[UrlFailure]: ...

    def known_urls(self, urls: Iterable[str]) -> set[str]:
        """Which of ``urls`` already have an image (so a re-run does no new work)."""

    def get(self, image_id: str) -> ImageRecord | None: ...

    def photo_metadata_unread(self, limit: int, after: str = "") -> list[ImageRecord]:
        """Up to ``limit`` records whose photo metadata was never read (``photo`` None: stored before
        ingest read EXIF), by id, those after ``after``: ingest reads it from their stored files."""

    def set_photo_metadata(self, metadata: dict[str, PhotoMetadata]) -> None:
        """Write each image's photo metadata into its record, and into what its filters read; an id
        without a record (removed meanwhile) is skipped."""

    # --- vectors (the embed worker's queue) ----------------------------------------------------
    def ensure_model(self, model: str, dim: int, vectors_per_image: int = 1) -> None:
        """Create what the model's vectors need (table, index); idempotent. ``ValueError`` if the
        model is stored with another dimension or number of vectors per image."""

    def pending(self, model: str, limit: int, exclude: Sequence[str] = ()) -> list[ImageRecord]:
        """Records with neither a vector nor an embed error for ``model``, oldest first."""

    def set_vectors(self, model: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Write (or replace) each image's embedding: ``vectors`` is [N, D], or [N, Q, D] for a model
        with Q vectors per image (BLIP-2); the first write sets the model up like ``ensure_model``.
        A vector clears the image's embed error for the model. Ids without a record, and vectors of
        another shape than the model's, raise ``StoreWriteError`` after the rest is written."""

    def set_embed_errors(self, model: str, errors: dict[str, str]) -> None:
        """id -> reason for images that could not be embedded (kept out of ``pending``). Ids
        without a record raise ``StoreWriteError`` after the rest is written."""

    def get_vector(self, model: str, image_id: str) -> np.ndarray | None:
        """The image's embedding as written ([D] or [Q, D]), or None."""

    def get_vectors(self, model: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The embeddings of those of ``ids`` that have one, by id, as ``get_vector`` gives each."""

    # --- tags (zero-shot labels, imagesearch/tags) -----------------------------------------------
    def untagged(self, model: str, key: str, limit: int, after: str = "") -> list[tuple[str, np.ndarray]]:
        """Up to ``limit`` images that have a vector for ``model`` but were not tagged as ``key`` says
        (``set_tags``), by id, those after ``after``, each with its vector as ``get_vector`` gives it:
        ingest tags them from these, with no image decoded."""

    def set_tags(self, tags: dict[str, list[str]], key: str) -> None:
        """Write each image's tags (``ImageRecord.tags``, replacing what it had) and what the tag filter,
        keyword search and ``tag_counts`` read, and remember that it was tagged as ``key`` says; an id
        without a record (removed meanwhile) is skipped."""

    def tag_counts(self, limit: int) -> list[tuple[str, int]]:
        """The tags the stored images hold, each with how many hold it: the most held first (ties by
        tag), at most ``limit`` (capped at ``MAX_K``)."""

    # --- removal -------------------------------------------------------------------------------
    def remove_images(self, ids: Sequence[str]) -> list[ImageRecord]:
        """Remove the records, their vectors for every model, their embed errors and URLs; returns
        the records removed (the caller deletes the files). The record and its URLs are remembered
        (``removed_urls``, ``removed_ids``) until the same image is stored again. Idempotent, and a
        rerun after a kill in the middle finishes the job."""

    def removed_urls(self, urls: Iterable[str]) -> set[str]:
        """Which of ``urls`` belong to removed images (the downloader skips them unless asked)."""

    def removed_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` were removed (the folder scan skips them unless asked)."""

    def find_ids(self, *, url: str | None = None, folder: str | None = None) -> list[str]:
        """Ids of the stored or removed images with this URL, or with a file under this folder."""

    # --- queries -------------------------------------------------------------------------------
    def search(
        self, model: str, vector: np.ndarray, k: int,
        filters: SearchFilters | None = None, min_score: float | None = None,
    ) -> list[Hit]:
        """Top-k by dot product (vectors are L2-normalized, so this is cosine), best first; an image
        with several vectors (BLIP-2) scores the best of them, as the model's own ITC score does.
        The top k of a larger k begins with the top k of a smaller one (pages rely on it; with an
        approximate index, as far as its candidates allow).
        ``filters`` apply before the top k is taken (``tags``: the image holds every one); ``min_score``
        drops hits below it; k <= 0 gives nothing and k is capped at ``MAX_K``. A model that was never set
        up (no ``ensure_model``, no vector) raises ``StoreUnavailable``: there is nothing to search with it yet."""

    def near_pairs(self, model: str, threshold: float, neighbours: int) -> list[tuple[str, str, float]]:
        """The pairs of images whose vectors' dot product is at least ``threshold``, each once as
        (a, b, score) with a < b: each image's up to ``neighbours`` nearest others at or above it,
        found through the store's kNN for all images in batches (an approximate index finds what
        its candidates hold). Images with several vectors (BLIP-2) are compared by their
        ``query_vector``s, exactly. A model never set up raises ``StoreUnavailable``, like ``search``."""

    def keyword_search(self, text: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        """The top-k records whose captions, tags or file names contain words of ``text``, by BM25 score
        (higher is better; not comparable to the cosine of ``search``), filters applied first."""

    def refresh(self) -> None:
        """Make every write so far visible to ``search`` (the local store: always at once; there it
        saves its graph indexes, so that the next process starts from them)."""

    def counts(self, model: str) -> Counts: ...

    def health(self) -> dict:
        """{"ok": bool, ...details}; never raises."""

    def close(self) -> None: ...
