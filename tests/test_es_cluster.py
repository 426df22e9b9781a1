"""Elasticsearch as a three-node cluster (tests/support/es_node.py ``Cluster``): one node is killed
with SIGKILL while an ingest is embedding and the API is answering searches. Searches go on, the
ingest goes on, and after the node is back every image is embedded exactly once.

What a user sees during the fault is measured here and written to test-artifacts/es-cluster-fault.json
(docs/deployment/operations.md's fault table quotes it)."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from imagesearch.api.app import create_app
from imagesearch.stores import make_store
from tests.support.cli import REPO, cli_env, command, run_cli
from tests.support.es_node import Cluster
from tests.support.net import wait_until
from tests.support.search_api import ApiThread, make_shapes, write_folder

MODEL = "shapes-tiny"


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class SearchLoad:
    """One client sending distinct text queries to the API back to back; keeps every answer."""

    def __init__(self, url: str):
        self.url, self.answers, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self.run, name="search-load")

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    r = client.get(f"{self.url}/search", params={"q": f"a red circle, take {i}", "k": 5})
                    status, results = r.status_code, len(r.json().get("results", [])) if r.status_code == 200 else 0
                except httpx.HTTPError as exc:
                    status, results = type(exc).__name__, 0
                self.answers.append((started, time.monotonic() - started, status, results))
                i += 1

    def between(self, start: float, end: float) -> list[tuple]:
        return [a for a in self.answers if start <= a[0] < end]


def summary(answers: list[tuple]) -> dict:
    latencies = np.array([a[1] for a in answers]) * 1000
    figures = {"searches": len(answers), "errors": sum(a[2] != 200 for a in answers)}
    if len(answers):
        figures.update(p50_ms=round(float(np.percentile(latencies, 50)), 1), max_ms=round(float(latencies.max()), 1))
    return figures


def test_a_node_killed_during_ingest_and_searches(cluster, tmp_path, settings, test_model_repo, artifacts_dir):
    prefix = f"t{uuid.uuid4().hex[:10]}"
    everywhere = ",".join(cluster.urls)
    env = cli_env(tmp_path / "var", test_model_repo, IMAGESEARCH_STORE="elasticsearch", IMAGESEARCH_ES_URL=everywhere,
                  IMAGESEARCH_ES_INDEX_PREFIX=prefix, IMAGESEARCH_ES_REPLICAS="1", IMAGESEARCH_DECODE_WORKERS="1",
                  IMAGESEARCH_BATCH_SIZE="4", IMAGESEARCH_DEPENDENCY_WAIT_S="300")
    first, second = make_shapes(3, seed=21), make_shapes(50, seed=22)
    distinct = len({hashlib.sha256(i.data).hexdigest() for i in first + second})
    done = run_cli("ingest", "--folder", str(write_folder(tmp_path / "first", first)), env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    store = make_store(settings.model_copy(update={"store": "elasticsearch", "es_url": everywhere, "es_index_prefix": prefix}))
    index = store.indices.alias_target(store.indices.aliases(MODEL)[0])
    cluster.wait_health("green", 3)  # every shard has its replica before anything is lost
    shards = store.es.cat.shards(index=index, format="json").body
    victim_name = next(s["node"] for s in shards if s["prirep"] == "p")  # the node with the vectors' primary
    victim = next(n for n in cluster.nodes if n.settings["node.name"] == victim_name)
    survivor = next(n for n in cluster.nodes if n is not victim)

    # The API knows one address only (a survivor); the ingest knows all three.
    # no rate limit: the load sends searches back to back, faster than any user
    api_settings = settings.model_copy(update={"store": "elasticsearch", "es_url": survivor.url, "es_index_prefix": prefix,
                                               "search_rate_per_s": 0})
    with ApiThread(create_app(api_settings)) as api:
        load = SearchLoad(api.url)
        load.thread.start()
        log = open(tmp_path / "ingest.log", "w")  # a file, not a pipe: a full pipe would stall the ingest
        ingest = subprocess.Popen(command("ingest", "--folder", str(write_folder(tmp_path / "second", second))),
                                  env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            while store.counts(MODEL).embedded < len(first) + 100:  # kill at a state: mid-embedding
                assert ingest.poll() is None, "the ingest finished before the node could be killed"
                time.sleep(0.1)
            assert ingest.poll() is None
            before_kill = store.counts(MODEL).embedded
            killed_at = time.monotonic()
            victim.kill()
            # the ingest goes on without the node (or finishes): more vectors arrive meanwhile
            while store.counts(MODEL).embedded < before_kill + 60 and ingest.poll() is None:
                time.sleep(0.2)
            wait_until(lambda: len(load.between(killed_at, math.inf)) >= 5, 120, "5 searches answered without the node",
                       interval=0.1)
            degraded = cluster.wait_health("yellow", 2)
            assert store.counts(MODEL).embedded > before_kill
            back_at = time.monotonic()
            victim.start()
            assert ingest.wait(600) == 0, (tmp_path / "ingest.log").read_text()[-3000:]
            cluster.wait_health("green", 3)
            green_at = time.monotonic()
            wait_until(lambda: len(load.between(green_at, math.inf)) >= 5, 120, "5 searches answered with the node back",
                       interval=0.1)
        finally:
            load.stop.set()
            load.thread.join(60)
            if ingest.poll() is None:
                ingest.kill()
            log.close()
        ended_at = time.monotonic()

    before, during, after = (load.between(0, killed_at), load.between(killed_at, back_at), load.between(back_at, ended_at))
    figures = {"node killed": victim_name, "health while it was gone": degraded["status"],
               "before": summary(before), "while the node was gone": summary(during), "after it was back": summary(after),
               "errors seen": sorted({str(a[2]) for a in load.answers if a[2] != 200})}
    (artifacts_dir / "es-cluster-fault.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))

    timeline = [(round(a[0] - killed_at, 2), round(a[1], 2), a[2]) for a in load.answers]
    assert len(during) >= 5 and len(after) >= 5, f"kill at 0, back at {back_at - killed_at:.1f} s: {timeline}"
    assert [a for a in load.answers if a[2] != 200] == []  # searches kept answering...
    assert all(a[3] == 5 for a in load.answers)  # ...with full results, never a partial answer
    counts = store.counts(MODEL)  # every image embedded exactly once
    assert (counts.images, counts.embedded, counts.pending, counts.embed_failed) == (distinct, distinct, 0, 0)
    store.refresh()
    assert store.es.count(index=store.indices.aliases(MODEL)[0])["count"] == distinct
    assert store.health()["ok"] is True
    store.close()
