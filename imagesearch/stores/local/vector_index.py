"""The local store's graph index for large collections: usearch HNSW over int8 vectors, whose
candidates the store rescores with the exact float32 vectors it keeps in SQLite.

Why: exact search over a million float32 vectors needs their full size in RAM, a long load in
every new process and a pass over all of them per query; through this index a query reads a small
part of a graph of int8 copies, and a new process opens a saved snapshot instead of loading every
vector (bench/bench_store.py measures both; the figures are in docs/benchmarks.md). SQLite stays the one
source of truth: the index is a cache that can always be rebuilt from it.

- **Keys are ``vectors.seq``.** A replaced or removed vector gets a new row (and seq) and its old
  row is gone, so a key whose row is missing is stale: the store drops it when a search meets it.
  No id map is kept in memory.
- **Snapshots** are ``<folder>/<model>.<seq>.usearch`` with a ``.json`` beside it, ``seq`` being
  the last row they hold. A process loads the newest one and adds the rows written after it. Each
  file is written under a temporary name and renamed into place (the JSON first, the index last),
  so a crash mid-save leaves the previous snapshot, and the newest complete one is what is read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CONNECTIVITY = 16  # HNSW's M: with the settings below, recall@10 stays at 1 on CLIP-like vectors (bench_vector_index)
EXPANSION_ADD = 128
# The graph's search breadth: text-like queries (far from every image, as CLIP's texts are) need
# this much to find every one of the ten nearest images; less breadth loses some (docs/benchmarks.md).
EXPANSION_SEARCH = 256
MIN_CANDIDATES = 64  # rescored per search at least: exact order among them, recall from the graph
RECENT_QUERIES = 1_024  # repeated queries whose candidates are kept until the index changes
SAVE_EVERY = 2_000  # unsaved changes before a new snapshot: a new process catches up on fewer, quickly
FORMAT = 1


class VectorIndex:
    """One model's HNSW index: int8 copies of the vectors (scaled, see ``scale``), keyed by seq."""

    def __init__(self, dim: int, scale: float | None = None, seq: int = 0, index=None):
        from usearch.index import Index  # imported here: only large collections need it

        self.dim, self.seq = dim, seq
        self.scale = scale  # set by the first vectors added
        self.index = index if index is not None else Index(
            ndim=dim, metric="ip", dtype="i8", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD)
        self.unsaved = 0
        # query bytes and count -> candidates. The graph walk is most of a query's cost in a large
        # index (its memory reads miss the cache) and gives the same answer for the same query until
        # the index changes; every change empties this.
        self._recent: OrderedDict[tuple[bytes, int], np.ndarray] = OrderedDict()

    @staticmethod
    def scale_for(vectors: np.ndarray) -> float:
        """usearch's int8 keeps round(127 x) of components clipped to [-1, 1]: unit vectors have
        small components, so they are scaled up first (one factor for all changes no ranking) and
        the rare component beyond the 99.99th percentile is clipped."""
        sample = np.abs(vectors[:100_000])
        return float(1.0 / max(np.quantile(sample, 0.9999), 1e-6))

    def __len__(self) -> int:
        return len(self.index)

    def add(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        if len(seqs):
            if self.scale is None:
                self.scale = self.scale_for(vectors)
            self.index.add(seqs.astype(np.uint64), np.clip(vectors * self.scale, -1, 1))
            self.seq = max(self.seq, int(seqs.max()))
            self.unsaved += len(seqs)
            self._recent.clear()

    def remove(self, seqs: list[int]) -> None:
        if seqs:
            self.index.remove(np.asarray(seqs, np.uint64))
            self.unsaved += len(seqs)
            self._recent.clear()

    def candidates(self, query: np.ndarray, count: int) -> np.ndarray:
        """The seqs of up to ``count`` nearest vectors by int8 inner product, nearest first."""
        count = min(count, len(self.index))
        if count <= 0 or self.scale is None:
            return np.zeros(0, np.int64)
        key = (np.asarray(query, np.float32).tobytes(), count)
        if (recent := self._recent.get(key)) is not None:
            self._recent.move_to_end(key)
            return recent
        self.index.expansion_search = max(count, EXPANSION_SEARCH)  # type: ignore[misc]  # it has a setter
        # Asked for everything (k past the collection's size), the graph may not reach every node: a scan does.
        found = self.index.search(np.clip(query * self.scale, -1, 1), count, exact=count >= len(self.index))
        seqs = found.keys.astype(np.int64)
        seqs.flags.writeable = False  # shared by the searches that repeat the query
        self._recent[key] = seqs
        if len(self._recent) > RECENT_QUERIES:
            self._recent.popitem(last=False)
        return seqs

    def nearest(self, queries: np.ndarray, count: int, expansion: int) -> np.ndarray:
        """The seqs of up to ``count`` nearest vectors of each query ([B, D]) by int8 inner product,
        nearest first, as one batch on every core: [B, count], -1 where a query has fewer.
        ``expansion``: the graph's search breadth (the ``candidates`` of single queries keep theirs)."""
        count = min(count, len(self.index))
        if count <= 0 or self.scale is None:
            return np.full((len(queries), 0), -1, np.int64)
        self.index.expansion_search = max(count, expansion)  # type: ignore[misc]  # it has a setter
        found = self.index.search(np.clip(queries * self.scale, -1, 1), count, threads=0)
        seqs = np.full((len(queries), count), -1, np.int64)
        if len(queries) == 1:  # usearch answers one query with the matches it found alone
            seqs[0, : len(found.keys)] = found.keys
            return seqs
        found_count = found.counts[:, None]  # type: ignore[union-attr]  # a batch's answer
        return np.where(np.arange(count)[None, :] < found_count, found.keys.astype(np.int64), seqs)

    # --- snapshots ---------------------------------------------------------------------------

    @staticmethod
    def _stem(model: str) -> str:
        return re.sub(r"[^\w.-]", "_", model)

    def save(self, folder: Path, model: str) -> None:
        """Write a snapshot and delete the older ones (a process that loaded one keeps its copy)."""
        if self.scale is None:
            return  # nothing added yet
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self._stem(model)}.{self.seq}"
        temporary = f".tmp-{os.getpid()}-{id(self)}"
        meta = {"format": FORMAT, "model": model, "dim": self.dim, "scale": self.scale, "seq": self.seq}
        (folder / f"{stem}.json{temporary}").write_text(json.dumps(meta))
        os.replace(folder / f"{stem}.json{temporary}", folder / f"{stem}.json")
        self.index.save(str(folder / f"{stem}.usearch{temporary}"))
        os.replace(folder / f"{stem}.usearch{temporary}", folder / f"{stem}.usearch")
        self.unsaved = 0
        for leftover in folder.glob("*.tmp-*"):  # a save killed midway, long ago
            if time.time() - leftover.stat().st_mtime > 3600:
                leftover.unlink(missing_ok=True)
        for seq, path in self._snapshots(folder, model):
            if seq < self.seq:
                for old in (path, path.with_suffix(".json")):
                    old.unlink(missing_ok=True)

    @classmethod
    def _snapshots(cls, folder: Path, model: str) -> list[tuple[int, Path]]:
        """(seq, path) of the model's complete snapshots, newest first."""
        pattern = re.compile(re.escape(cls._stem(model)) + r"\.(\d+)\.usearch")
        found = [(int(m.group(1)), p) for p in folder.glob("*.usearch") if (m := pattern.fullmatch(p.name))]
        return sorted(found, reverse=True)

    @classmethod
    def load(cls, folder: Path, model: str, dim: int) -> VectorIndex | None:
        """The newest snapshot that opens, or None (then the caller builds one from SQLite)."""
        from usearch.index import Index

        if not folder.is_dir():
            return None
        for seq, path in cls._snapshots(folder, model):
            try:
                meta = json.loads(path.with_suffix(".json").read_text())
                if (meta["format"], meta["dim"], meta["seq"]) != (FORMAT, dim, seq):
                    raise ValueError(f"made for {meta['dim']}-d vectors (format {meta['format']}), not {dim}-d")
                index = Index.restore(str(path))
                if index is None or index.ndim != dim:
                    raise ValueError("not a usearch index of this dimension")
            except FileNotFoundError:
                continue  # replaced by a newer one meanwhile
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("skipping the vector index snapshot %s (%s): it is rebuilt from the store", path, exc)
                continue
            return cls(dim, float(meta["scale"]), seq, index)
        return None


class RecallProbe:
    """How well a freshly built index finds neighbours, measured while the build streams every
    vector past it once: a few of the vectors are queries, their exact top k is kept as the rest
    goes by, and at the end the index's candidates are checked against it. Graph indexes do well
    on CLIP-like vectors and badly on uniformly spread ones; this tells the user which they have."""

    def __init__(self, queries: int = 20, k: int = 10):
        self.size, self.k = queries, k
        self.queries: np.ndarray | None = None
        self.query_seqs = np.zeros(0, np.int64)
        self.best_seqs = np.zeros((0, 0), np.int64)
        self.best_scores = np.zeros((0, 0), np.float32)

    def see(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        if self.queries is None:  # the first chunk's vectors, spread over it, are the queries
            picked = np.linspace(0, len(seqs) - 1, min(self.size, len(seqs))).astype(int)
            self.queries, self.query_seqs = vectors[picked].copy(), seqs[picked]
            self.best_seqs = np.zeros((len(picked), 0), np.int64)
            self.best_scores = np.zeros((len(picked), 0), np.float32)
        scores = self.queries @ vectors.T
        scores[self.query_seqs[:, None] == seqs[None, :]] = -np.inf  # a query is not its own neighbour
        all_scores = np.concatenate([self.best_scores, scores], axis=1)
        all_seqs = np.concatenate([self.best_seqs, np.broadcast_to(seqs, scores.shape)], axis=1)
        top = np.argsort(-all_scores, axis=1)[:, : self.k]
        self.best_scores = np.take_along_axis(all_scores, top, 1)
        self.best_seqs = np.take_along_axis(all_seqs, top, 1)

    def recall(self, index: VectorIndex) -> float | None:
        """Of the exact top k, the share among the index's candidates (what rescoring then orders)."""
        if self.queries is None or self.best_seqs.shape[1] < self.k or not np.isfinite(self.best_scores).all():
            return None  # too few vectors to say
        found = [len(set(index.candidates(q, MIN_CANDIDATES).tolist()) & set(best.tolist()))
                 for q, best in zip(self.queries, self.best_seqs, strict=True)]
        return float(np.mean(found)) / self.k
