"""The local store (the default, SQLite + exact search): filters are applied before the top k is taken;
another process holding the database's locks makes writers wait and readers answer 503, never 500."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from imagesearch.records import ImageRecord, SearchFilters
from imagesearch.stores.local import LocalStore

MODEL, DIM = "test-model", 16


def image_id(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


def toward(query: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine with the unit vector ``query`` is exactly ``cosine``."""
    other = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    other -= (other @ query) * query
    other /= np.linalg.norm(other)
    return (cosine * query + np.sqrt(1 - cosine**2) * other).astype(np.float32)


@pytest.fixture()
def crowded(tmp_path):
    """20 JPEG folder images of 1000x1000 very close to the query (cosine 0.99..0.95) and 3 PNG URL
    images of 200x200 far from it (cosine 0.5, 0.4, 0.3): the 3 are never in the unfiltered top 20."""
    store = LocalStore(tmp_path / "store.sqlite3")
    store.ensure_model(MODEL, DIM)
    query = np.zeros(DIM, np.float32)
    query[0] = 1.0
    close = [(i, "jpeg", 1000, "folder", 0.99 - 0.002 * i) for i in range(20)]
    far = [(100 + i, "png", 200, "url", cosine) for i, cosine in enumerate((0.5, 0.4, 0.3))]
    rows = close + far
    store.upsert_images([ImageRecord(id=image_id(i), width=side, height=side, format=fmt, bytes=1000, sources=[source])
                         for i, fmt, side, source, _ in rows])
    store.set_vectors(MODEL, [image_id(i) for i, *_ in rows],
                      np.stack([toward(query, cosine, seed=i) for i, *_, cosine in rows]))
    yield store, query, [image_id(i) for i, *_ in far]
    store.close()


@pytest.mark.parametrize("filters", [SearchFilters(format=["png"]), SearchFilters(source=["url"]),
                                     SearchFilters(max_width=500), SearchFilters(format=["png"], max_height=200)],
                         ids=["format", "source", "max_width", "format+max_height"])
def test_filters_apply_before_the_top_k(crowded, filters):
    """k=2 with a filter that only the 3 far images pass: filtering after the top k would return none
    of them; filtering before returns exactly the best 2 of the 3, best first, with their scores."""
    store, query, far = crowded
    assert [h.id for h in store.search(MODEL, query, 2)] == [image_id(0), image_id(1)]  # unfiltered: close ones
    hits = store.search(MODEL, query, 2, filters)
    assert [h.id for h in hits] == far[:2]
    np.testing.assert_allclose([h.score for h in hits], [0.5, 0.4], atol=1e-5)
    assert all(filters.matches(h.record) for h in hits)


def test_filter_with_k_over_the_matches_returns_every_match_and_nothing_else(crowded):
    store, query, far = crowded
    assert [h.id for h in store.search(MODEL, query, 10, SearchFilters(format=["png"]))] == far


def test_filters_and_min_score_together(crowded):
    """min_score cuts inside the filtered results, not inside the unfiltered top k."""
    store, query, far = crowded
    assert [h.id for h in store.search(MODEL, query, 3, SearchFilters(format=["png"]), min_score=0.35)] == far[:2]


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

    from api.app import create_app
    from tests.support.cli import start_cli
    from tests.support.search_api import ApiThread, ingest, make_shapes, settings_env, write_folder

    ingest(settings, "--folder", str(write_folder(tmp_path / "first", make_shapes(1, seed=3))))
    database = settings.data_dir / "store.sqlite3"
    lock = HeldLock(database, "write")
    try:
        late = start_cli("ingest", "--folder", str(write_folder(tmp_path / "second", make_shapes(1, seed=4))),
                         env=settings_env(settings))
        with ApiThread(create_app(settings)) as api:
            assert httpx.get(f"{api.url}/search", params={"q": "a red circle"}, timeout=30).status_code == 200
        try:
            late.wait(timeout=3)
        except Exception:  # still waiting for the lock, as it must: it cannot write before the release
            pass
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

    from api.app import create_app
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
