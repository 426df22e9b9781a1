"""`imagesearch ingest --ray ADDRESS` on a real local Ray cluster (a head and two worker nodes, each a
process of its own: tests/support/ray_cluster.py), with images from local HTTP servers on three
loopback addresses (three hosts).

The cluster is started once for the module; each test's inputs are small, so that the Ray tests stay
a small part of the suite. The test that kills a worker node comes last and puts a new one in its place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow
import pyarrow.parquet
import pytest

from imagesearch.blobs import sha256_hex
from imagesearch.config import Settings
from imagesearch.stores.local import LocalStore
from tests.support.cli import REPO, cli_env, command, start_cli
from tests.support.image_server import ImageServer, Reply
from tests.support.net import wait_until
from tests.support.search_api import make_shapes, stored_images
from tests.support.seaweedfs import in_bucket, objects, s3_env, thumbnail_objects

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
CRAWL_DELAY_S = 0.3


@pytest.fixture(scope="module")
def servers():
    """One image server per host; the third asks for a Crawl-delay in its robots.txt."""
    started = [ImageServer(host=host).start() for host in HOSTS]
    started[2].add("/robots.txt", f"User-agent: *\nCrawl-delay: {CRAWL_DELAY_S}\n".encode(), "text/plain")
    yield started
    for server in started:
        server.stop()


def serve(servers, shapes, prefix: str, **reply) -> list[str]:
    """Each image on one of the hosts, in turn; their URLs."""
    return [servers[i % len(servers)].add_sequence(f"/{prefix}/{i}.jpg", [Reply(200, s.data, **reply)])
            for i, s in enumerate(shapes)]


def ingest(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command("ingest", *args), env=env, capture_output=True, text=True, timeout=timeout)


def status(env: dict[str, str]) -> dict:
    done = subprocess.run(command("status", "--json"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["counts"]


def test_a_url_list_is_ingested_politely_and_the_store_ends_as_after_a_local_ingest(ray_cluster, servers, tmp_path,
                                                                                  test_model_repo):
    shapes = make_shapes(1, seed=51)
    urls = serve(servers, shapes, "first")
    broken = [servers[0].add("/first/missing.jpg", b"gone", "text/plain", status=404),
              servers[1].add("/first/text.jpg", b"not an image", "text/plain")]
    lines = [f"{url}\t{s.caption}" for url, s in zip(urls, shapes, strict=True)] + broken + [urls[0], "not a URL"]
    (tmp_path / "urls.txt").write_text("\n".join(lines) + "\n")
    for server in servers:
        server.max_in_flight = 0
    on_ray = cli_env(tmp_path / "ray", test_model_repo, IMAGESEARCH_DOWNLOAD_PER_HOST="2", IMAGESEARCH_DECODE_WORKERS="1",
                     **ray_cluster.driver_env)
    done = ingest(on_ray, "--urls", str(tmp_path / "urls.txt"), "--ray", ray_cluster.address)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert f"download (ray): {len(shapes)} downloaded" in done.stdout and "1 malformed lines" in done.stdout, done.stdout
    assert "2 failed (http_status 1, not_an_image 1)" in done.stdout, done.stdout
    assert f"embed (ray): {len(shapes)} embedded" in done.stdout, done.stdout
    # One task at a time per host, whichever node ran it: the per-host limit and the Crawl-delay held.
    assert all(server.max_in_flight <= 2 for server in servers), [s.max_in_flight for s in servers]
    slow = sorted(t for t, path in servers[2].started if path.startswith("/first/"))
    assert all(b - a >= CRAWL_DELAY_S * 0.9 for a, b in zip(slow, slow[1:], strict=False)), slow

    local = cli_env(tmp_path / "local", test_model_repo, IMAGESEARCH_DECODE_WORKERS="1")
    assert ingest(local, "--urls", str(tmp_path / "urls.txt")).returncode == 0
    assert status(on_ray) == status(local)  # `imagesearch status` sees the same, failures by reason included
    ray_store, local_store = LocalStore(tmp_path / "ray" / "store.sqlite3"), LocalStore(tmp_path / "local" / "store.sqlite3")
    try:
        for shape in shapes:  # the same decode and encoder, wherever they ran
            image_id = sha256_hex(shape.data)
            assert ray_store.get(image_id).captions == [shape.caption]
            assert np.allclose(ray_store.get_vector("shapes-tiny", image_id), local_store.get_vector("shapes-tiny", image_id),
                               atol=1e-5)
    finally:
        ray_store.close()
        local_store.close()


def test_a_parquet_list_is_downloaded_then_embedded_into_a_bucket(ray_cluster, servers, s3_server, tmp_path, test_model_repo):
    """img2dataset's Parquet input (url, caption columns); `ingest download --ray` stores the images in
    an S3-compatible bucket, `ingest embed --ray` embeds what is pending, reading them from there."""
    shapes = make_shapes(1, seed=52)
    urls = serve(servers[:2], shapes, "parquet")
    pyarrow.parquet.write_table(pyarrow.table({"url": urls, "caption": [s.caption for s in shapes]}), tmp_path / "list.parquet")
    settings = in_bucket(Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model="shapes-tiny",
                                  allow_private_networks=True), s3_server)
    env = {**s3_env(settings), "PYTHONPATH": str(REPO), **ray_cluster.driver_env}
    done = ingest(env, "download", "--urls", str(tmp_path / "list.parquet"), "--ray", ray_cluster.address)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert status(env)["pending"] == len(shapes) and len(objects(s3_server, settings)) == len(shapes)
    assert len(thumbnail_objects(s3_server, settings)) == len(shapes)  # made by the download tasks, as on one machine
    done = ingest(env, "embed", "--ray", ray_cluster.address)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert f"embed (ray): {len(shapes)} embedded" in done.stdout, done.stdout
    counts = status(env)
    assert (counts["images"], counts["embedded"], counts["pending"]) == (len(shapes), len(shapes), 0)
    assert not (tmp_path / "var" / "images").exists()


def test_a_data_folder_the_nodes_do_not_see_is_refused(ray_cluster, tmp_path, test_model_repo):
    """The driver's data folder is a mount of its own (as on a machine that shares no disk with the
    nodes): the run is refused before anything starts, saying what to use instead."""
    # root, as `make test` runs (its compose test starts a Docker engine too); unshare is util-linux's
    assert os.geteuid() == 0 and shutil.which("unshare"), "a private mount needs root and unshare (util-linux)"
    (tmp_path / "var").mkdir()
    env = cli_env(tmp_path / "var", test_model_repo, **ray_cluster.driver_env)
    argv = " ".join(command("ingest", "embed", "--ray", ray_cluster.address))
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f"mount -t tmpfs private {tmp_path / 'var'} && exec {argv}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the local store (IMAGESEARCH_STORE=local) is" in done.stderr and "which 3 of the Ray cluster's nodes do not see" \
        in done.stderr, done.stderr[-3000:]
    assert "IMAGESEARCH_STORE=elasticsearch" in done.stderr


def test_a_worker_node_killed_mid_ingest_loses_nothing_and_adds_nothing_twice(ray_cluster, servers, tmp_path, test_model_repo):
    """SIGKILL the raylet of the worker node that holds the model (the embed actor) while the cluster
    downloads and embeds: the run finishes (Ray starts the actor again elsewhere and retries what was
    lost), or a rerun does; either way every URL's image is stored once, with its file and its vector."""
    shapes = make_shapes(3, seed=53)  # 36 images
    urls = serve(servers[:2], shapes, "kill", body_delay_s=0.2)
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    env = cli_env(tmp_path / "var", test_model_repo, IMAGESEARCH_DOWNLOAD_PER_HOST="2", IMAGESEARCH_DECODE_WORKERS="1",
                  IMAGESEARCH_DOWNLOAD_WRITE_BATCH="4", IMAGESEARCH_RAY_HOST_PARTITIONS="2", **ray_cluster.driver_env)
    database = tmp_path / "var" / "store.sqlite3"
    run = start_cli("ingest", "--urls", str(tmp_path / "urls.txt"), "--ray", ray_cluster.address, env=env)
    try:
        victim: list[int | None] = [None]

        def embedding_on_a_worker() -> bool:
            victim[0] = next((n for n in (ray_cluster.worker_running(t) for t in ("ray::MapWorker", "ray::MapBatches"))
                              if n is not None), None)
            return run.poll() is not None or (victim[0] is not None and database.exists() and stored_images(database) >= 6)

        wait_until(embedding_on_a_worker, 120, "the first images stored, the embed actor on a worker node")
        assert run.poll() is None and victim[0] is not None, run.stdout.read()
        ray_cluster.kill_raylet(victim[0])
        output, _ = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
        ray_cluster.replace_dead_workers()
    if run.returncode != 0:  # the run gave up on the lost node: the same command goes on from where it stopped
        assert "run the same command again" in output, output
        done = ingest(env, "--urls", str(tmp_path / "urls.txt"), "--ray", ray_cluster.address)
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    store = LocalStore(database)
    try:
        counts = store.counts("shapes-tiny")
        assert (counts.images, counts.embedded, counts.pending, counts.failed_urls) == (len(shapes),) * 2 + (0, 0)
        for shape, url in zip(shapes, urls, strict=True):
            record = store.get(sha256_hex(shape.data))
            assert record.urls == [url]  # once, not once per attempt
            assert store.get_vector("shapes-tiny", record.id) is not None
    finally:
        store.close()
    files = [p for p in (tmp_path / "var" / "images").glob("??/*") if p.is_file()]
    assert sorted(p.stem for p in files) == sorted(sha256_hex(s.data) for s in shapes)
