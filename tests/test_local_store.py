"""The local store (the default, SQLite + exact search) under another process holding the database's
locks: writers wait and readers answer 503, never 500. The contract both stores keep: test_store_contract.py."""

from __future__ import annotations

import hashlib

import numpy as np

from imagesearch.stores.local import LocalStore

MODEL, DIM = "test-model", 16


# --- another process holds the database's lock ----------------------------------------------------

LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
if sys.argv[2] == "exclusive":  # readers are blocked too (in WAL mode only this lock blocks them)
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT OR REPLACE INTO models (model, dim) VALUES ('lock-holder', 1)")
print("locked", flush=True)
sys.stdin.readline()  # hold the lock until the test says so
db.execute("ROLLBACK")
"""


class HeldLock:
    """A separate process holding the store's write lock (``exclusive``: every lock) until released."""

    def __init__(self, path, mode: str):
        import subprocess
        import sys

        self.process = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path), mode],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.communicate("\n", timeout=30)
        assert self.process.returncode == 0


def test_writers_wait_for_another_writer_and_readers_go_on(settings, tmp_path):
    """An ingest started while another process writes waits for it, then finishes: nothing lost;
    the API keeps answering searches meanwhile (WAL: readers do not wait for writers)."""
    import httpx

    from imagesearch.api.app import create_app
    from imagesearch.blobs import FolderBlobStore
    from tests.support.cli import start_cli
    from tests.support.net import wait_until
    from tests.support.search_api import ApiThread, ingest, make_shapes, settings_env, write_folder

    ingest(settings, "--folder", str(write_folder(tmp_path / "first", make_shapes(1, seed=3))))
    database = settings.data_dir / "store.sqlite3"
    second = make_shapes(1, seed=4)
    lock = HeldLock(database, "write")
    try:
        late = start_cli("ingest", "--folder", str(write_folder(tmp_path / "second", second)),
                         env=settings_env(settings))
        with ApiThread(create_app(settings)) as api:
            assert httpx.get(f"{api.url}/search", params={"q": "a red circle"}, timeout=30).status_code == 200
        # The folder scan stores each image's file before its records (one write for the folder):
        # once every file is there, the ingest is at its first write, which must wait for the lock.
        files = [FolderBlobStore(settings.images_dir).path(hashlib.sha256(s.data).hexdigest(), "jpeg") for s in second]
        wait_until(lambda: all(f.exists() for f in files) or late.poll() is not None, 120, "the late ingest's files")
        assert late.poll() is None, late.stdout.read()
        reader = LocalStore(database)
        assert reader.counts("shapes-tiny").images == 12  # nothing of it written while the lock is held
        reader.close()
        assert late.poll() is None, late.stdout.read()
    finally:
        lock.release()
    output, _ = late.communicate(timeout=300)
    assert late.returncode == 0, output
    counts = LocalStore(database).counts("shapes-tiny")
    assert (counts.images, counts.embedded, counts.pending) == (24, 24, 0)


def test_a_store_locked_for_readers_gives_503_with_retry_after_then_recovers(settings, tmp_path):
    """A process holding the database exclusively (in WAL mode the one lock that blocks readers)
    when the API starts: searches answer 503 with Retry-After, then work once it lets go."""
    import httpx

    from imagesearch.api.app import create_app
    from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder

    ingest(settings, "--folder", str(write_folder(tmp_path / "photos", make_shapes(1, seed=5))))
    lock = HeldLock(settings.data_dir / "store.sqlite3", "exclusive")
    try:
        with ApiThread(create_app(settings)) as api:
            locked = httpx.get(f"{api.url}/search", params={"q": "a red circle"}, timeout=60)
            assert locked.status_code == 503, locked.text
            assert locked.json()["error"] == "store_unavailable" and "locked" in locked.json()["detail"]
            assert locked.headers["retry-after"]
            lock.release()
            assert httpx.get(f"{api.url}/search", params={"q": "a red circle"}, timeout=30).status_code == 200
    finally:
        lock.release()


def test_a_write_that_waits_past_its_limit_says_where_and_reads_go_on(tmp_path):
    """Another process holds the write lock longer than a write waits (``dependency_wait_s``): each
    write raises ``StoreUnavailable`` naming the database, nothing of it is kept, and reads answer
    meanwhile (WAL)."""
    import pytest

    from imagesearch.records import UrlFailure
    from imagesearch.stores import StoreUnavailable
    from tests.support.store_data import image_id, record, unit_vectors

    path = tmp_path / "store.sqlite3"
    store = LocalStore(path, write_wait_s=0.3)
    store.upsert_images([record(1)])
    store.set_vectors(MODEL, [image_id(1)], unit_vectors(1, DIM, seed=1))
    lock = HeldLock(path, "write")
    try:
        for write in (
            lambda: store.upsert_images([record(2)]),
            lambda: store.set_vectors(MODEL, [image_id(1)], unit_vectors(1, DIM, seed=2)),
            lambda: store.record_failures([UrlFailure(url="https://a.example/x.jpg", reason="timeout")]),
            lambda: store.remove_images([image_id(1)]),
        ):
            with pytest.raises(StoreUnavailable, match=f"{path}.*locked"):
                write()
        assert [h.id for h in store.search(MODEL, unit_vectors(1, DIM, seed=1)[0], 5)] == [image_id(1)]
        assert store.counts(MODEL).images == 1
    finally:
        lock.release()
    np.testing.assert_array_equal(store.get_vector(MODEL, image_id(1)), unit_vectors(1, DIM, seed=1)[0])
    assert store.get(image_id(2)) is None and store.failures() == []
    store.close()


# --- keyword index ------------------------------------------------------------------------------

def test_keyword_rows_are_found_by_rowid(tmp_path):
    """Re-storing and removing an image touch its one keyword row (FTS5 finds rows by rowid only:
    finding them by id would be a full scan per write)."""
    import hashlib
    import sqlite3

    from imagesearch.records import ImageRecord
    from imagesearch.stores.local.keywords import keyword_rowid

    def image_id(n: int) -> str:
        return hashlib.sha256(str(n).encode()).hexdigest()

    def record(n: int, caption: str) -> ImageRecord:
        return ImageRecord(id=image_id(n), urls=[f"http://example.com/{n}.jpg"], captions=[caption], sources=["url"],
                           width=8, height=8, format="jpeg", bytes=10)

    path = tmp_path / "store.db"
    store = LocalStore(path)
    store.upsert_images([record(1, "lighthouse at dawn"), record(2, "harbour crane")])
    store.upsert_images([record(1, "lighthouse at dawn")])  # stored again: still one row
    db = sqlite3.connect(path)
    assert sorted(db.execute("SELECT rowid, id FROM image_keywords").fetchall()) == sorted(
        (keyword_rowid(image_id(n)), image_id(n)) for n in (1, 2))
    store.remove_images([image_id(2)])
    assert [i for (i,) in db.execute("SELECT id FROM image_keywords")] == [image_id(1)]
    assert [h.id for h in store.keyword_search("lighthouse", 5)] == [image_id(1)]
    db.close()
    store.close()


def test_keyword_search_gives_the_best_bm25_matches_that_pass_the_filter_in_order(tmp_path):
    """keyword_search lets FTS5 rank by its `rank` column and stops at k (fast); the answer must be
    the one a full bm25() ranking of every match gives, also when the filter skips the best ones."""
    import hashlib
    import random
    import sqlite3

    from imagesearch.records import ImageRecord, SearchFilters

    rng = random.Random(3)
    words = ["harbour", "crane", "lighthouse", "dawn", "boat", "gull", "rope", "quay"]
    records = [ImageRecord(id=hashlib.sha256(str(n).encode()).hexdigest(), urls=[f"http://example.com/{n}.jpg"],
                           captions=[" ".join(rng.choices(words, k=rng.randint(2, 8)))], sources=["url"],
                           width=8, height=8, format="png" if n % 3 else "jpeg", bytes=10) for n in range(300)]
    store = LocalStore(tmp_path / "store.db")
    store.upsert_images(records)
    formats = {r.id: r.format for r in records}
    ranked = sqlite3.connect(tmp_path / "store.db").execute(  # every match, ranked in full
        "SELECT id, bm25(image_keywords) FROM image_keywords WHERE image_keywords MATCH '\"gull\" OR \"dawn\"'"
        " ORDER BY bm25(image_keywords), rowid").fetchall()
    assert len(ranked) > 100
    for k, filters, allowed in ((10, None, {"png", "jpeg"}), (25, SearchFilters(format=["jpeg"]), {"jpeg"})):
        hits = store.keyword_search("Gull dawn", k, filters)
        expected = [(i, -score) for i, score in ranked if formats[i] in allowed]
        assert len(hits) == k and all(formats[h.id] in allowed for h in hits)
        assert [round(h.score, 9) for h in hits] == [round(score, 9) for _, score in expected[:k]]
        # ties in bm25 may come in either order; each hit's own score must be its bm25 score
        assert all(round(h.score, 9) == round(dict(expected)[h.id], 9) for h in hits)
    store.close()


def test_a_word_most_captions_hold_is_left_out_of_the_search_without_changing_the_answer(tmp_path):
    """bm25 gives a word in half the captions or more next to no weight but scores every caption
    it matches ("a" at 1M images: seconds); keyword_search leaves it out unless too few images
    match the other words. The answer must be the full bm25 ranking's, up to its ~1e-6 weight."""
    import hashlib
    import random
    import sqlite3

    from imagesearch.records import ImageRecord

    rng = random.Random(5)
    words = ["harbour", "crane", "lighthouse", "dawn", "boat", "gull", "rope", "quay"]
    captions = [f"a {' '.join(rng.choices(words, k=rng.randint(1, 6)))}" for _ in range(400)]
    captions[7], captions[300] = "a zebra", "a zebra on a quay"
    records = [ImageRecord(id=hashlib.sha256(str(n).encode()).hexdigest(), urls=[], captions=[caption],
                           sources=["folder"], width=8, height=8, format="png", bytes=10) for n, caption in enumerate(captions)]
    store = LocalStore(tmp_path / "store.db")
    store.upsert_images(records)
    db = sqlite3.connect(tmp_path / "store.db")

    def full_ranking(match: str) -> list[tuple[str, float]]:
        return [(i, -rank) for i, rank in db.execute(
            "SELECT id, bm25(image_keywords) FROM image_keywords WHERE image_keywords MATCH ? ORDER BY 2", [match])]

    assert db.execute("SELECT doc FROM image_keyword_terms WHERE term = 'a'").fetchone() == (400,)
    for query, k in (("a gull at dawn", 20), ("a zebra", 10), ("A", 5)):
        expected = full_ranking(" OR ".join(f'"{w}"' for w in query.lower().split()))
        hits = store.keyword_search(query, k)
        assert len(hits) == k
        scores = dict(expected)  # each hit's full bm25 score, and the k best of them, up to "a"'s weight
        assert all(abs(h.score - scores[h.id]) < 1e-5 for h in hits)
        assert [round(h.score, 4) for h in hits] == [round(score, 4) for _, score in expected[:k]]
    zebra = [h.record.captions[0] for h in store.keyword_search("a zebra", 10)]
    assert sorted(zebra[:2]) == ["a zebra", "a zebra on a quay"] and all("zebra" not in c for c in zebra[2:])
    statements: list[str] = []  # what SQLite ran, parameters filled in
    store.database.connection().set_trace_callback(statements.append)
    store.keyword_search("a gull at dawn", 20)
    store.database.connection().set_trace_callback(None)
    searches = [sql for sql in statements if "MATCH" in sql and "image_keywords.rank" in sql]
    assert len(searches) == 1 and '"a"' not in searches[0] and '"gull"' in searches[0]
    store.close()


# --- one batch of vectors is one transaction --------------------------------------------------------

BATCH_WRITER = """
import sys
import numpy as np

from imagesearch.stores.local import LocalStore
from tests.support.store_data import image_id, unit_vectors
n, dim = int(sys.argv[2]), int(sys.argv[3])
store = LocalStore(sys.argv[1])
print("writing", flush=True)
store.set_vectors(sys.argv[4], [image_id(i) for i in range(n)], unit_vectors(n, dim, seed=5))
print("written", flush=True)
"""


def test_a_batch_of_vectors_is_seen_all_or_none_by_a_reader_and_after_a_kill(tmp_path):
    """A reader never sees part of a `set_vectors` batch, and SIGKILL in the middle of writing one
    leaves none of it. The kill comes at a state: once the batch's pages spill into the WAL file,
    before the commit (a batch this large cannot stay in SQLite's page cache)."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.store_data import image_id, record

    n, dim = 20_000, 512  # 40 MB of vectors
    path = tmp_path / "store.db"
    store = LocalStore(path)
    store.upsert_images([record(i) for i in range(n)])
    store.close()  # the last connection checkpoints and removes the WAL file
    wal = Path(f"{path}-wal")
    writer = subprocess.Popen([sys.executable, "-c", BATCH_WRITER, str(path), str(n), str(dim), MODEL],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert writer.stdout.readline().strip() == "writing"
    reader = sqlite3.connect(path, timeout=30)
    seen = set()
    while not (wal.exists() and wal.stat().st_size > 8 * 2**20):  # 8 MB of the batch in the WAL, uncommitted
        assert writer.poll() is None, "the batch was written before the kill"
        seen.add(reader.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (MODEL,)).fetchone()[0])
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait(30) == -signal.SIGKILL
    seen.add(reader.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", (MODEL,)).fetchone()[0])
    reader.close()
    assert seen == {0}, f"a reader saw part of the batch: {sorted(seen)[:5]}"

    reopened = LocalStore(path)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert reopened.counts(MODEL).embedded == 0
    reopened.set_vectors(MODEL, [image_id(i) for i in range(n)], np.ones((n, dim), np.float32) / np.sqrt(dim))
    assert reopened.counts(MODEL).embedded == n
    reopened.close()


# --- the schema's version ------------------------------------------------------------------------

def test_a_new_store_has_the_schema_version_and_opens_again(tmp_path):
    import sqlite3

    from imagesearch.stores.local.database import SCHEMA_VERSION

    path = tmp_path / "store.sqlite3"
    store = LocalStore(path)
    store.ensure_model(MODEL, DIM)
    store.close()
    assert SCHEMA_VERSION == 3  # 3: the tags
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    reopened = LocalStore(path)
    assert reopened.counts(MODEL).images == 0 and reopened.health()["ok"]
    reopened.close()


def test_a_store_of_another_schema_version_is_refused_with_what_to_do(tmp_path):
    import sqlite3

    import pytest

    from imagesearch.stores import StoreUnavailable

    path = tmp_path / "store.sqlite3"
    LocalStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(StoreUnavailable) as refused:
        LocalStore(path)
    message = str(refused.value)
    assert str(path) in message and "schema version 7" in message and "expects version 3" in message
    assert "new data dir" in message and "no upgrade path" in message


def test_a_store_made_before_schema_versions_is_refused(tmp_path):
    """A database with the store's tables but user_version 0 (made before the schema had a version)."""
    import sqlite3

    import pytest

    from imagesearch.stores import StoreUnavailable

    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as db:  # the tables as a store before versioning created them
        db.executescript("""
            CREATE TABLE images (id TEXT PRIMARY KEY, record TEXT NOT NULL, format TEXT NOT NULL, width INTEGER NOT NULL,
                height INTEGER NOT NULL, sources TEXT NOT NULL);
            CREATE TABLE models (model TEXT PRIMARY KEY, dim INTEGER NOT NULL);""")
    with pytest.raises(StoreUnavailable) as refused:
        LocalStore(path)
    message = str(refused.value)
    assert str(path) in message and "schema version 0 (made before the schema had versions)" in message
    assert "expects version 3" in message and "new data dir" in message
    with sqlite3.connect(path) as db:  # left as it was
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
        assert {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {"images", "models"}
