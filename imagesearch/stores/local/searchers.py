"""What searches each model, held in memory and caught up with SQLite before every search: its
exact matrix (``matrix.py``) up to ``index_min_vectors`` vectors, its graph index (``graph.py``)
from there on."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from imagesearch.records import SearchFilters
from imagesearch.stores.base import MAX_K, StoreUnavailable, describe_layout
from imagesearch.stores.local import duplicates, graph
from imagesearch.stores.local.database import Database
from imagesearch.stores.local.filters import filter_mask
from imagesearch.stores.local.matrix import Matrix, top_k
from imagesearch.stores.local.vector_index import SAVE_EVERY, VectorIndex
from imagesearch.stores.pairs import Pair


class Searchers:
    """Each model's matrix or graph index, and the lock over them."""

    def __init__(self, database: Database, index_folder: Path, index_min_vectors: int):
        self.database = database
        self.index_folder = index_folder  # the graph indexes' snapshots
        self.index_min_vectors = index_min_vectors
        self.matrices: dict[str, Matrix] = {}
        self.indexes: dict[str, VectorIndex] = {}
        self.lock = threading.RLock()  # over the matrices and indexes: one search or update at a time

    def search(self, model: str, vector: np.ndarray, k: int, filters: SearchFilters | None) -> list[tuple[str, float]]:
        """The top k (id, score) pairs for the query ``vector``, best first (see ``VectorStore.search``)."""
        searcher = self._searcher(model)
        query = np.asarray(vector, np.float32)
        per_image = searcher.per_image if isinstance(searcher, Matrix) else 1
        dim = searcher.dim // per_image
        if query.shape != (dim,):  # a caller's mistake, never a silent reshape
            raise ValueError(f"a query of shape {query.shape} for model {model}, whose images have "
                             f"{describe_layout(dim, per_image)}")
        if k <= 0:
            return []
        k = min(k, MAX_K)
        if isinstance(searcher, VectorIndex):
            return graph.index_search(self.database.connection(), self.lock, searcher, model, query, k, filters)
        return self._exact_search(searcher, query, k, filters)

    def near_pairs(self, model: str, threshold: float, neighbours: int) -> list[Pair]:
        """See ``VectorStore.near_pairs``: through the graph index, or exactly over the matrix."""
        searcher = self._searcher(model)
        if isinstance(searcher, VectorIndex):
            return duplicates.index_pairs(self.database.connection(), self.lock, searcher, model, threshold, neighbours)
        return duplicates.matrix_pairs(searcher, self.lock, threshold, neighbours)

    def _searcher(self, model: str) -> VectorIndex | Matrix:
        if (searcher := self.for_model(model)) is None:
            raise StoreUnavailable(f"the local store at {self.database.path} has no vectors for model {model}: "
                                   "nothing has been embedded with it yet (run `imagesearch ingest`)")
        return searcher

    def for_model(self, model: str) -> VectorIndex | Matrix | None:
        """What searches the model now, caught up with every write so far (None: a model never set up)."""
        with self.lock:
            searcher = self._current(model)
            db = self.database.connection()
            if isinstance(searcher, VectorIndex):
                graph.catch_up(db, model, searcher)
                if searcher.unsaved >= SAVE_EVERY:  # the next process to open the store starts from here
                    searcher.save(self.index_folder, model)
            elif searcher is not None:
                searcher.catch_up(db, model)
            return searcher

    def _current(self, model: str) -> VectorIndex | Matrix | None:
        """The model's graph index (a snapshot, or built once the model has ``index_min_vectors``), else
        its exact matrix; made on the first search of the model in this process."""
        index, matrix = self.indexes.get(model), self.matrices.get(model)
        if index is not None:
            return index
        if matrix is not None and (matrix.per_image > 1 or len(matrix.ids) - matrix.dead < self.index_min_vectors):
            return matrix
        if matrix is None:
            row = self.database.connection().execute(
                "SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone()
            if row is None:
                return None
            dim, per_image = row
        else:  # grown to index_min_vectors
            dim, per_image = matrix.dim, 1
        if per_image == 1 and (index := self._open_index(model, dim)) is not None:
            return index
        if matrix is None:
            matrix = self.matrices[model] = Matrix(dim, per_image)
        return matrix

    def _open_index(self, model: str, dim: int) -> VectorIndex | None:
        index = graph.open_index(self.database.connection(), self.index_folder, model, dim, self.index_min_vectors)
        if index is not None:
            self.indexes[model] = index
            self.matrices.pop(model, None)  # the index and SQLite replace it
        return index

    def _exact_search(self, matrix: Matrix, query: np.ndarray, k: int,
                      filters: SearchFilters | None) -> list[tuple[str, float]]:
        if not matrix.ids:
            return []
        with self.lock:
            # One product at a time: it already uses every core (BLAS), and concurrent ones only
            # fight over memory bandwidth. Also keeps the matrix from growing underneath it.
            scores = matrix.scores(query)
        if filters is not None:
            scores = np.where(filter_mask(self.database.connection(), filters, matrix.index, len(scores)), scores, -np.inf)
        return top_k(matrix.ids, scores, k)

    def save_indexes(self) -> None:
        """Bring every model's graph index up to date and save it (opening or building the ones that
        are due), so that the next process to open the store starts from them."""
        db = self.database.connection()
        for model, dim in db.execute("SELECT model, dim FROM models WHERE vectors_per_image = 1").fetchall():
            with self.lock:
                index = self.indexes.get(model)
                if index is None:
                    index = self._open_index(model, dim)
                if index is None:
                    continue  # small enough for exact search: nothing to keep
                graph.catch_up(db, model, index)
                if index.unsaved:
                    index.save(self.index_folder, model)
