"""The local store's SQLite database: its schema and schema version, a connection per thread, write
transactions that wait for other writers, and the one way to ask for many keys at once.

SQLite gives crash-safe transactions (``kill -9`` at any point loses at most the uncommitted batch)
and lets other processes (the API) read while ingest writes (WAL mode). It is the store's one
source of truth: what the store holds in memory is rebuilt from it.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from imagesearch.geo import great_circle_km
from imagesearch.stores.base import StoreUnavailable

T = TypeVar("T")

# The layout of the tables below (SQLite's `PRAGMA user_version`). A store of another version is
# refused: there is no upgrade path before the first release.
SCHEMA_VERSION = 3

SCHEMA = (
    # The record, and copies of what filters read. taken_at: seconds since 1970 UTC (a time without
    # an offset taken as UTC, records.instant); photo_read 0: its EXIF was never read (photos.py);
    # tags_key: which tagging gave its tags (NULL: never tagged; tags.py).
    """CREATE TABLE images (id TEXT PRIMARY KEY, record TEXT NOT NULL, format TEXT NOT NULL, width INTEGER NOT NULL,
           height INTEGER NOT NULL, sources TEXT NOT NULL, taken_at REAL, latitude REAL, longitude REAL,
           photo_read INTEGER NOT NULL, tags_key TEXT)""",
    # A date range, or a place's latitude band, is a range of these indexes instead of every row;
    # with the id in them, finding the images in it never reads the rows (their records are large).
    "CREATE INDEX images_taken_at ON images (taken_at, id)",
    "CREATE INDEX images_position ON images (latitude, longitude, id)",
    "CREATE INDEX images_photo_unread ON images (id) WHERE photo_read = 0",
    # The names each image's camera is found by (PhotoMetadata.cameras): the camera filter.
    "CREATE TABLE image_cameras (camera TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (camera, id)) WITHOUT ROWID",
    "CREATE INDEX image_cameras_id ON image_cameras (id)",
    # Each image's tags (the tag filter, the counts), and which images are tagged as the current
    # tagging says (read from this index alone: the rows hold the large records).
    "CREATE TABLE image_tags (tag TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (tag, id)) WITHOUT ROWID",
    "CREATE INDEX image_tags_id ON image_tags (id)",
    "CREATE INDEX images_tags_key ON images (id, tags_key)",
    "CREATE TABLE urls (url TEXT PRIMARY KEY, image_id TEXT NOT NULL)",
    "CREATE TABLE failures (url TEXT PRIMARY KEY, record TEXT NOT NULL, reason TEXT NOT NULL)",
    # vectors_per_image: 1, or BLIP-2's query count
    "CREATE TABLE models (model TEXT PRIMARY KEY, dim INTEGER NOT NULL, vectors_per_image INTEGER NOT NULL DEFAULT 1)",
    # AUTOINCREMENT: a replaced vector gets a larger rowid, so readers can refresh incrementally.
    """CREATE TABLE vectors (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, id TEXT NOT NULL,
           vector BLOB NOT NULL, UNIQUE (model, id))""",
    # The removed ones among a model's vector rows (few): counting what is embedded then reads two
    # indexes instead of every vector row.
    "CREATE INDEX vectors_removed ON vectors (model) WHERE length(vector) = 0",
    """CREATE TABLE embed_errors (model TEXT NOT NULL, id TEXT NOT NULL, reason TEXT NOT NULL,
           PRIMARY KEY (model, id))""",
    # Removed images (the record as it was) and their URLs: not downloaded or scanned in again unless asked.
    "CREATE TABLE removed (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE removed_urls (url TEXT PRIMARY KEY, image_id TEXT NOT NULL)",
    # Keyword search (mode=text|hybrid): captions, tags and file names, BM25-ranked by FTS5. The rowid comes
    # from the image id (keywords.keyword_rowid): FTS5 indexes only its text, so finding a row by id
    # would scan the whole table at every write.
    "CREATE VIRTUAL TABLE image_keywords USING fts5(id UNINDEXED, text, tokenize='unicode61 remove_diacritics 2')",
    # How many captions hold each word (no storage of its own: FTS5 reads its index).
    "CREATE VIRTUAL TABLE image_keyword_terms USING fts5vocab(image_keywords, 'row')",
)

# A removed image's vector rows are replaced by empty ones (a newer seq), so every reader's matrix
# sees the removal in the same ordered stream as the additions.
HAS_VECTOR = "length(vector) > 0"

READ_WAIT_S = 5.0  # a read waits this long for a lock (only an exclusive one blocks readers in WAL mode)
IN_CHUNK = 500  # values bound in one `IN (...)`: under SQLite's limit on a statement's parameters


def answers(method: Callable[..., T]) -> Callable[..., T]:
    """SQLite's operational errors (database locked or busy, I/O) as ``StoreUnavailable``: the API
    answers 503 with Retry-After instead of a 500, and the caller may try again later. For methods
    of an object with the database's ``path``."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the local store at {self.path} cannot answer now: {exc}") from exc

    return wrapper


def _great_circle_km(lat1: float | None, lon1: float | None, lat2: float, lon2: float) -> float | None:
    return None if lat1 is None or lon1 is None else great_circle_km(lat1, lon1, lat2, lon2)


def select_in(db: sqlite3.Connection, query: str, values: Sequence[Any], params: Sequence[Any] = ()) -> Iterator[Any]:
    """The rows of ``{query} IN ({values})``, ``params`` bound before the values: one statement per
    ``IN_CHUNK`` values, however many there are."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = list(values[start : start + IN_CHUNK])
        yield from db.execute(f"{query} IN ({','.join('?' * len(chunk))})", [*params, *chunk])


class Database:
    """The store's SQLite file, created at ``SCHEMA_VERSION`` or opened at it."""

    def __init__(self, path: Path, write_wait_s: float):
        self.path = path
        self.write_wait_ms = int(write_wait_s * 1000)  # a write waits this long for another writer
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the folder of the local store at {self.path}: {exc}") from exc
        self._open_schema()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=READ_WAIT_S, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
                db.create_function("great_circle_km", 4, _great_circle_km, deterministic=True)  # the place filter
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the local store at {self.path}: {exc}") from exc
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that waits up to ``write_wait_s`` for another writer (ingest in another
        process, a backup) instead of failing at once. Committed at the end, rolled back on an error."""
        db = self.connection()
        db.execute(f"PRAGMA busy_timeout = {self.write_wait_ms}")
        try:
            db.execute("BEGIN IMMEDIATE")
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(READ_WAIT_S * 1000)}")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- schema --------------------------------------------------------------------------------

    @answers
    def _open_schema(self) -> None:
        """Create the tables in a new database; refuse one made at another schema version."""
        if self._version(self.connection()) == SCHEMA_VERSION:  # a read: opening a store never waits for a writer
            return
        with self.transaction() as db:
            version = self._version(db)
            if version == SCHEMA_VERSION:  # created by another process meanwhile
                return
            if version != 0 or db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                raise StoreUnavailable(self._refusal(version))
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _version(db: sqlite3.Connection) -> int:
        return db.execute("PRAGMA user_version").fetchone()[0]

    def _refusal(self, version: int) -> str:
        found = "0 (made before the schema had versions)" if version == 0 else str(version)
        return (f"the local store at {self.path} has schema version {found}, but this imagesearch expects version "
                f"{SCHEMA_VERSION}: ingest again into a new data dir (IMAGESEARCH_DATA_DIR); there is no upgrade "
                "path between schema versions before the first release")
