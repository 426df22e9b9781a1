"""The embedded vector store: one SQLite database on disk (WAL), searched in memory.

Why this design: SQLite gives crash-safe transactions (``kill -9`` at any point loses at most the
uncommitted batch) and lets other processes (the API) read while ingest writes. It is the one
source of truth; what is in memory is rebuilt from it.

- Up to ``index_min_vectors`` vectors of a model (100k by default), search is exact: the vectors
  are mirrored into one float32 matrix, refreshed incrementally by row id, and a query is one
  matrix-vector product (recall 1.0 by construction; ~8 ms at 100k x 512 on 2 cores).
- From there on, a model with one vector per image is searched through an HNSW graph index
  (``vector_index.py``, saved beside the database), and its candidates are rescored with the
  float32 vectors from SQLite: exact scores, ~3 ms at 1M. Several vectors per image (BLIP-2) stay
  exact. bench/bench_store.py measures both.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from imagesearch.records import Counts, Hit, ImageRecord, SearchFilters, UrlFailure
from imagesearch.stores.base import MAX_K, StoreUnavailable, StoreWriteError, checked_vectors, describe_layout, vector_layout
from imagesearch.stores.local.vector_index import MIN_CANDIDATES, SAVE_EVERY, RecallProbe, VectorIndex

T = TypeVar("T")
log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, record TEXT NOT NULL, format TEXT NOT NULL, width INTEGER NOT NULL,
    height INTEGER NOT NULL, sources TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, image_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (url TEXT PRIMARY KEY, record TEXT NOT NULL, reason TEXT NOT NULL);
-- vectors_per_image: 1, or BLIP-2's query count (added later: see MIGRATIONS)
CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, dim INTEGER NOT NULL, vectors_per_image INTEGER NOT NULL DEFAULT 1);
-- AUTOINCREMENT: a replaced vector gets a larger rowid, so readers can refresh incrementally.
CREATE TABLE IF NOT EXISTS vectors (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, id TEXT NOT NULL, vector BLOB NOT NULL,
    UNIQUE (model, id));
-- The removed ones among a model's vector rows (few): counting what is embedded then reads two
-- indexes instead of every 2 KB row (1.8 s at 1M vectors).
CREATE INDEX IF NOT EXISTS vectors_removed ON vectors (model) WHERE length(vector) = 0;
CREATE TABLE IF NOT EXISTS embed_errors (model TEXT NOT NULL, id TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (model, id));
-- Removed images (the record as it was) and their URLs: not downloaded or scanned in again unless asked.
CREATE TABLE IF NOT EXISTS removed (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed_urls (url TEXT PRIMARY KEY, image_id TEXT NOT NULL);
-- Keyword search (mode=text|hybrid): captions and file names, BM25-ranked by FTS5. The rowid comes
-- from the image id (keyword_rowid): FTS5 indexes only its text, so finding a row by id would scan
-- the whole table at every write. (`keywords`, the first version, was found by id: replaced.)
DROP TABLE IF EXISTS keywords;
CREATE VIRTUAL TABLE IF NOT EXISTS image_keywords USING fts5(id UNINDEXED, text, tokenize='unicode61 remove_diacritics 2');
-- How many captions hold each word (no storage of its own: FTS5 reads its index).
CREATE VIRTUAL TABLE IF NOT EXISTS image_keyword_terms USING fts5vocab(image_keywords, 'row');
"""


# Columns added after a table first shipped: (table, column, definition), added where missing.
MIGRATIONS = [("models", "vectors_per_image", "INTEGER NOT NULL DEFAULT 1")]


def keyword_rowid(image_id: str) -> int:
    """The image's row in ``image_keywords``: 63 bits of its sha256 (a collision among a million
    images has odds of about 1 in 10^7)."""
    return int(image_id[:16], 16) >> 1


# A removed image's vector rows are replaced by empty ones (a newer seq), so every reader's matrix
# sees the removal in the same ordered stream as the additions.
HAS_VECTOR = "length(vector) > 0"


class _Matrix:
    """The in-memory mirror of one model's vectors: a row per image (its Q vectors side by side)."""

    def __init__(self, dim: int, vectors_per_image: int = 1):
        self.per_image = vectors_per_image
        self.dim = dim * vectors_per_image
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.data = np.zeros((0, self.dim), np.float32)
        self.alive = np.zeros(0, bool)  # False: removed since
        self.dead = 0  # rows not alive (none: searches skip the mask)
        self.last_seq = 0

    def add(self, rows: list[tuple[int, str, bytes]]) -> None:
        new_ids = [i for _, i, blob in rows if i not in self.index and blob]
        need = len(self.ids) + len(set(new_ids))
        if need > len(self.data):  # grow geometrically
            size = max(need, 2 * len(self.data), 1024)
            grown = np.zeros((size, self.dim), np.float32)
            grown[: len(self.ids)] = self.data[: len(self.ids)]
            alive = np.zeros(size, bool)
            alive[: len(self.ids)] = self.alive[: len(self.ids)]
            self.data, self.alive = grown, alive
        for seq, image_id, blob in rows:
            self.last_seq = max(self.last_seq, seq)
            row = self.index.get(image_id)
            if not blob:  # removed
                if row is not None and self.alive[row]:
                    self.alive[row] = False
                    self.dead += 1
                continue
            if row is None:
                row = self.index[image_id] = len(self.ids)
                self.ids.append(image_id)
            elif not self.alive[row]:
                self.dead -= 1  # stored and embedded again
            self.data[row] = np.frombuffer(blob, np.float32)
            self.alive[row] = True

    @property
    def vectors(self) -> np.ndarray:
        return self.data[: len(self.ids)]

    @property
    def live(self) -> np.ndarray:
        return self.alive[: len(self.ids)]


READ_WAIT_S = 5.0  # a read waits this long for a lock (only an exclusive one blocks readers in WAL mode)


def _answers(method: Callable[..., T]) -> Callable[..., T]:
    """SQLite's operational errors (database locked or busy, I/O) as ``StoreUnavailable``: the API
    answers 503 with Retry-After instead of a 500, and the caller may try again later."""

    @functools.wraps(method)
    def wrapper(self: "LocalStore", *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the local store at {self.path} cannot answer now: {exc}") from exc

    return wrapper


INDEX_MIN_VECTORS = 100_000  # below: exact search (~8 ms at 100k x 512), no index to build or keep
# A search through the index that finds fewer than k filtered candidates asks for 4x more, up to
# this many (or 8k); past that the filter is so narrow that exact search over its matches is cheap.
MAX_FILTER_CANDIDATES = 4_096


class LocalStore:
    def __init__(self, path: Path, write_wait_s: float = 300.0, index_min_vectors: int = INDEX_MIN_VECTORS):
        self.path = Path(path)
        self.write_wait_ms = int(write_wait_s * 1000)  # a write waits this long for another writer
        self.index_min_vectors = index_min_vectors
        self.index_folder = self.path.with_name(self.path.name + ".index")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the folder of the local store at {self.path}: {exc}") from exc
        self._local = threading.local()
        self._matrices: dict[str, _Matrix] = {}
        self._indexes: dict[str, VectorIndex] = {}
        self._memory_lock = threading.RLock()  # over the matrices and indexes: one search or update at a time
        self._db().executescript(SCHEMA)  # executescript manages its own transaction
        self._migrate()
        self._fill_keywords()

    def _migrate(self) -> None:
        def missing(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return [(t, c, d) for t, c, d in MIGRATIONS if c not in {row[1] for row in db.execute(f"PRAGMA table_info({t})")}]

        if not missing(self._db()):  # a read: opening a current store never waits for a writer
            return
        with self._tx() as db:
            for table, column, definition in missing(db):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def _fill_keywords(self) -> None:
        """A store from before keyword search: index the records it holds, once."""
        db = self._db()
        if db.execute("SELECT 1 FROM image_keywords LIMIT 1").fetchone() or not db.execute("SELECT 1 FROM images LIMIT 1").fetchone():
            return
        with self._tx() as db:
            rows = db.execute("SELECT id, record FROM images").fetchall()
            db.executemany("INSERT INTO image_keywords (rowid, id, text) VALUES (?, ?, ?)",
                           [(keyword_rowid(i), i, ImageRecord.model_validate_json(r).keyword_text) for i, r in rows])

    # --- connections ------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=READ_WAIT_S, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the local store at {self.path}: {exc}") from exc
            self._local.db = db
        return db

    class _Transaction:
        """A write transaction that waits up to ``wait_ms`` for another writer (ingest in another
        process, a backup) instead of failing at once."""

        def __init__(self, db: sqlite3.Connection, wait_ms: int):
            self.db, self.wait_ms = db, wait_ms

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute(f"PRAGMA busy_timeout = {self.wait_ms}")
            try:
                self.db.execute("BEGIN IMMEDIATE")
            finally:
                self.db.execute(f"PRAGMA busy_timeout = {int(READ_WAIT_S * 1000)}")
            return self.db

        def __exit__(self, exc_type, *_):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> "_Transaction":
        return self._Transaction(self._db(), self.write_wait_ms)

    # --- metadata ----------------------------------------------------------------------------

    @_answers
    def upsert_images(self, records: Sequence[ImageRecord]) -> list[bool]:
        # Set-wise statements, not nine per record: the downloader writes ~500 records a second.
        created, merged = [], dict[str, ImageRecord]()
        with self._tx() as db:
            stored = self._get_many(list({r.id: None for r in records}))
            for record in records:  # the same image twice in a batch merges like across batches
                before = merged.get(record.id) or stored.get(record.id)
                created.append(before is None)
                merged[record.id] = before.merge(record) if before else record
            rows = list(merged.values())
            urls = [(url, r.id) for r in rows for url in r.urls]
            db.executemany(
                "INSERT INTO images (id, record, format, width, height, sources) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET record = excluded.record, sources = excluded.sources",
                [(r.id, r.model_dump_json(), r.format, r.width, r.height, json.dumps(r.sources)) for r in rows],
            )
            db.executemany("INSERT OR REPLACE INTO urls (url, image_id) VALUES (?, ?)", urls)
            db.executemany("DELETE FROM failures WHERE url = ?", [(url,) for url, _ in urls])
            db.executemany("DELETE FROM image_keywords WHERE rowid = ?", [(keyword_rowid(r.id),) for r in rows])
            db.executemany("INSERT INTO image_keywords (rowid, id, text) VALUES (?, ?, ?)",
                           [(keyword_rowid(r.id), r.id, r.keyword_text) for r in rows])
            db.executemany("DELETE FROM removed WHERE id = ?", [(r.id,) for r in rows])  # stored again on purpose
            db.executemany("DELETE FROM removed_urls WHERE url = ?", [(url,) for url, _ in urls])
        return created

    @_answers
    def record_failures(self, failures: Sequence[UrlFailure]) -> None:
        with self._tx() as db:
            for failure in failures:
                row = db.execute("SELECT record FROM failures WHERE url = ?", (failure.url,)).fetchone()
                if row:
                    failure = failure.model_copy(update={"attempts": UrlFailure.model_validate_json(row[0]).attempts + failure.attempts})
                db.execute("INSERT OR REPLACE INTO failures (url, record, reason) VALUES (?,?,?)",
                           (failure.url, failure.model_dump_json(), failure.reason))

    @_answers
    def failures(self) -> list[UrlFailure]:
        rows = self._db().execute("SELECT record FROM failures ORDER BY url").fetchall()
        return [UrlFailure.model_validate_json(r[0]) for r in rows]

    @_answers
    def known_urls(self, urls: Iterable[str]) -> set[str]:
        urls, known = list(urls), set[str]()
        db = self._db()
        for start in range(0, len(urls), 500):
            chunk = urls[start : start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(r[0] for r in db.execute(f"SELECT url FROM urls WHERE url IN ({marks})", chunk))
        return known

    @_answers
    def get(self, image_id: str) -> ImageRecord | None:
        row = self._db().execute("SELECT record FROM images WHERE id = ?", (image_id,)).fetchone()
        return ImageRecord.model_validate_json(row[0]) if row else None

    def _get_many(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        found, db = {}, self._db()
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for i, r in db.execute(f"SELECT id, record FROM images WHERE id IN ({marks})", chunk):
                found[i] = ImageRecord.model_validate_json(r)
        return found

    # --- vectors -----------------------------------------------------------------------------

    @_answers
    def ensure_model(self, model: str, dim: int, vectors_per_image: int = 1) -> None:
        with self._tx() as db:
            row = db.execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone()
            if row and tuple(row) != (dim, vectors_per_image):
                raise ValueError(f"model {model} is stored with {describe_layout(*row)}, not {describe_layout(dim, vectors_per_image)}")
            db.execute("INSERT OR IGNORE INTO models (model, dim, vectors_per_image) VALUES (?, ?, ?)",
                       (model, dim, vectors_per_image))

    @_answers
    def pending(self, model: str, limit: int, exclude: Sequence[str] = ()) -> list[ImageRecord]:
        exclude = list(exclude)
        marks = ",".join("?" * len(exclude))
        rows = self._db().execute(
            "SELECT record FROM images i WHERE"
            f" NOT EXISTS (SELECT 1 FROM vectors v WHERE v.model = ? AND v.id = i.id AND {HAS_VECTOR})"
            " AND NOT EXISTS (SELECT 1 FROM embed_errors e WHERE e.model = ? AND e.id = i.id)"
            + (f" AND i.id NOT IN ({marks})" if exclude else "")
            + " ORDER BY i.rowid LIMIT ?",
            [model, model, *exclude, limit],
        ).fetchall()
        return [ImageRecord.model_validate_json(r[0]) for r in rows]

    def _missing(self, db: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that have no image record."""
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            found.update(r[0] for r in db.execute(f"SELECT id FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return set(unique) - found

    @_answers
    def set_vectors(self, model: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        vectors = checked_vectors(ids, vectors)
        if not len(ids):
            return
        given = vector_layout(vectors)
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO models (model, dim, vectors_per_image) VALUES (?, ?, ?)", (model, *given))
            stored = tuple(db.execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone())
            rejected = {i: "no image record with this id" for i in self._missing(db, ids)}
            if given != stored:
                rejected.update({i: f"{describe_layout(*given)}, but model {model} is stored with {describe_layout(*stored)}" for i in ids})
            written = [(i, v) for i, v in zip(ids, vectors, strict=True) if i not in rejected]
            db.executemany("INSERT OR REPLACE INTO vectors (model, id, vector) VALUES (?, ?, ?)",
                           [(model, i, v.tobytes()) for i, v in written])
            db.executemany("DELETE FROM embed_errors WHERE model = ? AND id = ?", [(model, i) for i, _ in written])
        if rejected:
            raise StoreWriteError(rejected, "the local store")

    @_answers
    def set_embed_errors(self, model: str, errors: dict[str, str]) -> None:
        with self._tx() as db:
            missing = self._missing(db, list(errors))
            db.executemany("INSERT OR REPLACE INTO embed_errors (model, id, reason) VALUES (?,?,?)",
                           [(model, i, r) for i, r in errors.items() if i not in missing])
        if missing:
            raise StoreWriteError({i: "no image record with this id" for i in missing}, "the local store")

    @_answers
    def get_vector(self, model: str, image_id: str) -> np.ndarray | None:
        row = self._db().execute(
            "SELECT v.vector, m.dim, m.vectors_per_image FROM vectors v JOIN models m ON m.model = v.model"
            " WHERE v.model = ? AND v.id = ?", (model, image_id)).fetchone()
        if not row or not row[0]:
            return None
        vector = np.frombuffer(row[0], np.float32).copy()
        return vector if row[2] == 1 else vector.reshape(row[2], row[1])

    # --- removal -----------------------------------------------------------------------------

    @_answers
    def remove_images(self, ids: Sequence[str]) -> list[ImageRecord]:
        removed = []
        with self._tx() as db:
            for image_id in dict.fromkeys(ids):
                row = db.execute("SELECT record FROM images WHERE id = ?", (image_id,)).fetchone()
                if row is None:
                    continue
                record = ImageRecord.model_validate_json(row[0])
                db.execute("INSERT OR REPLACE INTO removed (id, record) VALUES (?, ?)", (image_id, row[0]))
                db.executemany("INSERT OR REPLACE INTO removed_urls (url, image_id) VALUES (?, ?)",
                               [(u, image_id) for u in record.urls])
                models = [m for (m,) in db.execute("SELECT model FROM vectors WHERE id = ?", (image_id,))]
                db.executemany("INSERT OR REPLACE INTO vectors (model, id, vector) VALUES (?, ?, x'')",
                               [(m, image_id) for m in models])
                for table in ("images", "embed_errors"):
                    db.execute(f"DELETE FROM {table} WHERE id = ?", (image_id,))
                db.execute("DELETE FROM image_keywords WHERE rowid = ?", (keyword_rowid(image_id),))
                db.execute("DELETE FROM urls WHERE image_id = ?", (image_id,))
                removed.append(record)
        return removed

    @_answers
    def removed_urls(self, urls: Iterable[str]) -> set[str]:
        return self._in("removed_urls", "url", list(urls))

    @_answers
    def removed_ids(self, ids: Iterable[str]) -> set[str]:
        return self._in("removed", "id", list(ids))

    def _in(self, table: str, column: str, values: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            found.update(r[0] for r in self._db().execute(
                f"SELECT {column} FROM {table} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk))
        return found

    @_answers
    def find_ids(self, *, url: str | None = None, folder: str | None = None) -> list[str]:
        db = self._db()
        if url is not None:
            return [r[0] for r in db.execute("SELECT image_id FROM urls WHERE url = ? UNION "
                                             "SELECT image_id FROM removed_urls WHERE url = ?", (url, url))]
        prefix = str(folder).rstrip("/") + "/"
        query = ("SELECT id FROM {table} WHERE EXISTS (SELECT 1 FROM json_each(json_extract(record, '$.paths')) "
                 "WHERE substr(value, 1, ?) = ?)")
        return [r[0] for table in ("images", "removed")
                for r in db.execute(query.format(table=table), (len(prefix), prefix))]

    # --- queries -----------------------------------------------------------------------------

    def _searcher(self, model: str) -> VectorIndex | _Matrix | None:
        """What searches the model now, caught up with every write so far: its graph index (a
        snapshot, or built once the model has ``index_min_vectors``), else its exact matrix."""
        with self._memory_lock:
            index, matrix = self._indexes.get(model), self._matrices.get(model)
            if index is None and (matrix is None or (matrix.per_image == 1 and len(matrix.ids) - matrix.dead >= self.index_min_vectors)):
                if matrix is None:  # the first search of this model in this process
                    row = self._db().execute("SELECT dim, vectors_per_image FROM models WHERE model = ?", (model,)).fetchone()
                    if row is None:
                        return None
                    dim, per_image = row
                else:
                    dim, per_image = matrix.dim, 1
                if per_image == 1:
                    index = self._open_index(model, dim)
                if index is None and matrix is None:
                    matrix = self._matrices[model] = _Matrix(dim, per_image)
            if index is not None:
                self._catch_up(model, index)
                if index.unsaved >= SAVE_EVERY:  # the next process to open the store starts from here
                    index.save(self.index_folder, model)
                return index
            assert matrix is not None
            self._catch_up_matrix(model, matrix)
            return matrix

    def _open_index(self, model: str, dim: int) -> VectorIndex | None:
        """The model's saved index, or a new one, once it has enough vectors (None: stay exact)."""
        count = self._db().execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (model,)).fetchone()[0]
        if count < self.index_min_vectors:  # whatever was saved: the setting decides
            return None
        index = VectorIndex.load(self.index_folder, model, dim)
        last = self._db().execute("SELECT seq FROM sqlite_sequence WHERE name = 'vectors'").fetchone()
        if index is not None and index.seq > (last[0] if last else 0):  # a database restored from an older backup
            log.warning("the vector index of %s is newer than the store (seq %d): it is rebuilt", model, index.seq)
            index = None
        if index is None:
            log.info("building the vector index of %s from %d vectors (once: it is saved beside the store)", model, count)
            index = VectorIndex(dim)
        self._indexes[model] = index
        self._matrices.pop(model, None)  # the index and SQLite replace it
        return index

    def _catch_up(self, model: str, index: VectorIndex) -> None:
        """Add the vectors written since the index's last seq (in chunks: a first build reads them
        all, and measures how well the new index finds neighbours)."""
        started, probe = time.monotonic(), RecallProbe() if len(index) == 0 else None
        cursor = self._db().execute(
            f"SELECT seq, vector FROM vectors WHERE seq > ? AND +model = ? AND {HAS_VECTOR} ORDER BY seq", (index.seq, model))
        while rows := cursor.fetchmany(50_000):
            seqs = np.fromiter((seq for seq, _ in rows), np.int64, len(rows))
            vectors = np.frombuffer(b"".join(blob for _, blob in rows), np.float32).reshape(len(rows), index.dim)
            index.add(seqs, vectors)
            if probe is not None:
                probe.see(seqs, vectors)
        recall = probe.recall(index) if probe is not None else None
        if probe is None or recall is None:
            return
        log.info("vector index of %s: %d vectors in %.0f s; recall@10 on %d of its own vectors: %.3f",
                 model, len(index), time.monotonic() - started, probe.size, recall)
        if recall < 0.9:
            log.warning("the vector index of %s finds only %.0f%% of the nearest neighbours: these vectors are too evenly "
                        "spread for a graph index (CLIP embeddings are not). For exact search, set "
                        "IMAGESEARCH_LOCAL_INDEX_MIN_VECTORS above %d (slower: ~100 ms at 1M vectors on 2 cores)",
                        model, 100 * recall, len(index))

    def _catch_up_matrix(self, model: str, matrix: _Matrix) -> None:
        """Add what was written since the matrix's last seq."""
        # "+model" keeps SQLite on the seq (rowid) range instead of scanning the (model, id) index:
        # with nothing new this is ~0.01 ms instead of ~35 ms at 100k vectors.
        cursor = self._db().execute(
            "SELECT seq, id, vector FROM vectors WHERE seq > ? AND +model = ? ORDER BY seq", (matrix.last_seq, model))
        while rows := cursor.fetchmany(50_000):  # in chunks: the rows' bytes never sit in memory beside the matrix
            matrix.add(rows)

    @staticmethod
    def _filter_sql(filters: SearchFilters | None) -> tuple[str, list]:
        """The filters as a WHERE condition on the images table."""
        if filters is None:
            return "1", []
        clauses, params = [], []
        if filters.format is not None:
            clauses.append(f"format IN ({','.join('?' * len(filters.format))})")
            params += filters.format
        if filters.source is not None:
            clauses.append("(" + " OR ".join("sources LIKE ?" for _ in filters.source) + ")")
            params += [f'%"{s}"%' for s in filters.source]
        for field, op in (("min_width", ">="), ("min_height", ">="), ("max_width", "<="), ("max_height", "<=")):
            value = getattr(filters, field)
            if value is not None:
                clauses.append(f"{field.split('_')[1]} {op} ?")
                params.append(value)
        return " AND ".join(clauses) or "1", params

    def _filter_mask(self, matrix: _Matrix, filters: SearchFilters) -> np.ndarray:
        where, params = self._filter_sql(filters)
        mask = np.zeros(len(matrix.ids), bool)
        for (image_id,) in self._db().execute(f"SELECT id FROM images WHERE {where}", params):
            row = matrix.index.get(image_id)
            if row is not None:
                mask[row] = True
        return mask

    @_answers
    def search(self, model: str, vector: np.ndarray, k: int,
               filters: SearchFilters | None = None, min_score: float | None = None) -> list[Hit]:
        searcher = self._searcher(model)
        if searcher is None:
            raise StoreUnavailable(f"the local store at {self.path} has no vectors for model {model}: "
                                   "nothing has been embedded with it yet (run `imagesearch ingest`)")
        query = np.asarray(vector, np.float32)
        per_image = searcher.per_image if isinstance(searcher, _Matrix) else 1
        dim = searcher.dim // per_image
        if query.shape != (dim,):  # a caller's mistake, never a silent reshape
            raise ValueError(f"a query of shape {query.shape} for model {model}, whose images have "
                             f"{describe_layout(dim, per_image)}")
        if k <= 0:
            return []
        k = min(k, MAX_K)
        if isinstance(searcher, VectorIndex):
            scored = self._index_search(model, searcher, query, k, filters)
        else:
            scored = self._exact_search(searcher, query, k, filters)
        kept = [(i, score) for i, score in scored if min_score is None or score >= min_score]
        records = self._get_many([i for i, _ in kept]) if kept else {}
        return [Hit(id=i, score=score, record=records[i]) for i, score in kept if i in records]

    def _exact_search(self, matrix: _Matrix, query: np.ndarray, k: int,
                      filters: SearchFilters | None) -> list[tuple[str, float]]:
        """The exact top k of the in-memory matrix, best first."""
        if not matrix.ids:
            return []
        with self._memory_lock:
            # One product at a time: it already uses every core (BLAS), and concurrent ones only
            # fight over memory bandwidth. Also keeps the matrix from growing underneath it.
            vectors = matrix.vectors
            if matrix.per_image == 1:
                scores = vectors @ query
            else:  # an image scores its best vector (BLIP-2's ITC score): one product, then a max per row
                scores = (vectors.reshape(-1, len(query)) @ query).reshape(len(vectors), matrix.per_image).max(1)
            if matrix.dead:
                scores[~matrix.live] = -np.inf
        if filters is not None:
            scores = np.where(self._filter_mask(matrix, filters), scores, -np.inf)
        return self._top(matrix.ids, scores, k)

    @staticmethod
    def _top(ids: Sequence[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = min(k, len(scores))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    def _index_search(self, model: str, index: VectorIndex, query: np.ndarray, k: int,
                      filters: SearchFilters | None) -> list[tuple[str, float]]:
        """The index's nearest candidates, rescored exactly with the float32 vectors from SQLite.
        Stale keys (replaced or removed vectors) are dropped from the index as they are met."""
        where, params = self._filter_sql(filters)
        # The images table only matters to a filter. A removed image's vectors left the index's keys
        # with it, so without one the join would add nothing but a lookup per candidate (~2 ms at 1M).
        rows_from = "vectors v" if where == "1" else "vectors v JOIN images ON images.id = v.id"
        count = max(2 * k, MIN_CANDIDATES)
        while True:
            with self._memory_lock:
                seqs = index.candidates(query, count)
                size = len(index)
            ids, vectors, found = [], [], set()
            for start in range(0, len(seqs), 500):
                chunk = [int(seq) for seq in seqs[start : start + 500]]
                rows = self._db().execute(
                    f"SELECT v.seq, v.id, v.vector, ({where}) FROM {rows_from}"
                    f" WHERE v.seq IN ({','.join('?' * len(chunk))})", [*params, *chunk]).fetchall()
                for seq, image_id, blob, matches in rows:
                    found.add(seq)
                    if matches:
                        ids.append(image_id)
                        vectors.append(np.frombuffer(blob, np.float32))
            stale = [int(seq) for seq in seqs if int(seq) not in found]
            if stale:
                with self._memory_lock:
                    index.remove(stale)
            if len(ids) >= k or count >= size:  # enough, or the whole index was asked for
                break
            if filters is not None and count >= max(MAX_FILTER_CANDIDATES, 8 * k):
                return self._exact_filtered(model, query, k, where, params)
            count *= 4
        return self._top(ids, np.stack(vectors) @ query if vectors else np.zeros(0, np.float32), k)

    def _exact_filtered(self, model: str, query: np.ndarray, k: int, where: str, params: list) -> list[tuple[str, float]]:
        """Exact search over the images a narrow filter lets through, their vectors read from SQLite."""
        ids, scores = [], []
        cursor = self._db().execute(
            f"SELECT v.id, v.vector FROM vectors v JOIN images ON images.id = v.id"
            f" WHERE v.model = ? AND length(v.vector) > 0 AND ({where})", [model, *params])
        while rows := cursor.fetchmany(10_000):
            ids += [image_id for image_id, _ in rows]
            scores.append(np.frombuffer(b"".join(blob for _, blob in rows), np.float32).reshape(len(rows), -1) @ query)
        return self._top(ids, np.concatenate(scores) if scores else np.zeros(0, np.float32), k)

    @_answers
    def keyword_search(self, text: str, k: int, filters: SearchFilters | None = None) -> list[Hit]:
        words = re.findall(r"\w+", text.lower())
        if not words or k <= 0:
            return []
        where, params = self._filter_sql(filters)
        db, limit = self._db(), min(k, MAX_K)

        def best(words: list[str]) -> list:
            # ORDER BY the `rank` column (bm25 by default), not bm25(): FTS5 then ranks the matches
            # by rowid alone and reads the id, the record and the filter's columns only as the rows
            # are taken, so the LIMIT stops it early. bm25() in ORDER BY read them for every match
            # first: 2-4x slower at 100k captions (Performance, "Keyword and hybrid search").
            return db.execute(
                "SELECT i.id, i.record, image_keywords.rank FROM image_keywords JOIN images i ON i.id = image_keywords.id"
                f" WHERE image_keywords MATCH ? AND {where} ORDER BY image_keywords.rank LIMIT ?",
                [" OR ".join(f'"{w}"' for w in words), *params, limit]).fetchall()

        # bm25 gives a word that at least half the captions hold ("a", "the") an IDF of 1e-6 (FTS5
        # clamps ln((N - n + 0.5) / (n + 0.5)) <= 0), yet scores every caption it matches. Without
        # such words the ranking is the same up to ties (scores differ by ~1e-6 per word), so they
        # are left out unless the other words match fewer than k images.
        common = self._common_words(db, words)
        informative = [w for w in words if w not in common]
        rows = best(informative) if 0 < len(informative) < len(words) else []
        if len(rows) < limit:
            rows = best(words)
        return [Hit(id=i, score=-rank, record=ImageRecord.model_validate_json(r)) for i, r, rank in rows]

    @staticmethod
    def _common_words(db: sqlite3.Connection, words: list[str]) -> set[str]:
        """The words that at least half the captions hold (2-3 ms at 100k for a word in half of them)."""
        captions = db.execute("SELECT count(*) FROM image_keywords_docsize").fetchone()[0]  # FTS5's row count
        held = {w: db.execute("SELECT doc FROM image_keyword_terms WHERE term = ?", (w,)).fetchone() for w in set(words)}
        return {w for w, row in held.items() if row is not None and 2 * row[0] >= captions}

    @_answers
    def counts(self, model: str) -> Counts:
        db = self._db()
        images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (model,)).fetchone()[0]  # the (model, id) index
        removed = db.execute("SELECT COUNT(*) FROM vectors WHERE model = ? AND length(vector) = 0", (model,)).fetchone()[0]
        embedded = rows - removed
        errors = db.execute("SELECT COUNT(*) FROM embed_errors WHERE model = ?", (model,)).fetchone()[0]
        by_reason = dict(db.execute("SELECT reason, COUNT(*) FROM failures GROUP BY reason").fetchall())
        return Counts(images=images, embedded=embedded, pending=max(0, images - embedded - errors),
                      embed_failed=errors, failed_urls=sum(by_reason.values()), failed_by_reason=by_reason)

    @_answers
    def refresh(self) -> None:
        """Every committed write is visible to the next search already. This brings the graph
        indexes up to date and saves them, so that the next process to open the store (the API)
        starts from them instead of catching up or building one (ingest calls it when it ends)."""
        models = self._db().execute("SELECT model, dim FROM models WHERE vectors_per_image = 1").fetchall()
        for model, dim in models:
            with self._memory_lock:
                index = self._indexes.get(model)
                if index is None:
                    index = self._open_index(model, dim)
                if index is None:
                    continue  # small enough for exact search: nothing to keep
                self._catch_up(model, index)
                if index.unsaved:
                    index.save(self.index_folder, model)

    def health(self) -> dict:
        try:
            self._db().execute("SELECT 1 FROM images LIMIT 1").fetchall()
            return {"ok": True, "backend": "local", "path": str(self.path)}
        except Exception as exc:  # noqa: BLE001 - health never raises
            return {"ok": False, "backend": "local", "path": str(self.path), "error": str(exc)}

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
