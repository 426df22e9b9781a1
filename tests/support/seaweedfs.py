"""A real S3-compatible server for tests: SeaweedFS (Apache-2.0), and the session fixture ``s3_server``.

SeaweedFS builds from its Go module through the Go proxy, once, with this machine's Go; the binary is
cached in the test cache (like Docker Compose in tests/support/docker_engine.py). ``weed server -s3``
runs a master, a volume server, a filer and the S3 gateway in one process, on free ports in a
temporary folder, with one access key (an S3 identity file). ``stop()`` and ``start()`` keep its
data: the outage test takes it away in the middle of an ingest. It answers writes about ten
seconds after it starts (its filer waits to find itself registered before it grants write locks).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from pydantic import SecretStr

from imagesearch.config import Settings
from tests.support.es_node import cache_dir
from tests.support.net import free_port, wait_until
from tests.support.search_api import settings_env

MODULE = "github.com/seaweedfs/seaweedfs"
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"  # the one version the Go proxy lists
ACCESS_KEY, SECRET_KEY = "imagesearch-test", "imagesearch-test-secret"
REGION = "us-east-1"


def _run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def ensure_weed() -> Path:
    """The ``weed`` binary, built from its Go module on first use (a few minutes on 2 cores)."""
    binary = cache_dir() / "seaweedfs" / f"weed-{VERSION}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it right now
        if binary.exists():
            return binary
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(go).exists():
            raise RuntimeError("the S3 tests build SeaweedFS with Go (https://go.dev/dl/)")
        module = json.loads(_run([go, "mod", "download", "-json", f"{MODULE}@{VERSION}"], timeout=900,
                                 cwd=tempfile.gettempdir()).stdout)
        partial = binary.parent / f"{binary.name}.partial"
        # `go install module@version` refuses a module whose go.mod has replace lines: build in its folder.
        _run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), "./weed"], timeout=2400,
             cwd=module["Dir"], env={**os.environ, "GOFLAGS": "-mod=mod"})
        partial.rename(binary)
    return binary


class SeaweedFS:
    """``weed server -s3`` on 127.0.0.1; ``stop()`` and ``start()`` keep its data."""

    def __init__(self, binary: Path):
        self.binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="imagesearch-seaweedfs-"))
        (self.workdir / "data").mkdir()
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.grpc_ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        identities = {"identities": [{"name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                      "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        self.s3_config = self.workdir / "s3.json"
        self.s3_config.write_text(json.dumps(identities))
        # Read from the working folder. A new bucket's first write waits for its volumes: one volume
        # at a time instead of seven, and no deferral of the first allocation (meant for a rebuilt
        # master in a real cluster, whose volume servers need time to report).
        (self.workdir / "master.toml").write_text('[master.volume_growth]\ncopy_1 = 1\nallocation_deferral = "0s"\n')
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        ports, grpc = self.ports, self.grpc_ports
        cmd = [str(self.binary), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.workdir / 'data'}",
               f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
               f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
               "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
               "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={self.s3_config}",
               "-s3.port.iceberg=0", "-s3.port.lance=0",  # catalogs the tests do not use, on fixed ports by default
               "-master.electionTimeout=1s",  # a restart on its own data elects its one master within seconds, not half a minute
               "-master.volumeSizeLimitMB=64", "-volume.max=0"]  # small volumes: the disk is shared with the rest
        log = open(self.workdir / "weed.log", "ab")
        self.process = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_until(self._answers, timeout, "SeaweedFS S3", process=self.process, log_tail=self.log_tail, interval=0.3)

    def _answers(self) -> bool:
        """The S3 gateway answers, and a write goes through (the volume server has registered)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        try:
            if "imagesearch-readiness" not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                client.create_bucket(Bucket="imagesearch-readiness")
            client.put_object(Bucket="imagesearch-readiness", Key="probe", Body=b"ok")
        except (BotoCoreError, ClientError):  # not up yet: connection refused, 5xx while the filer starts
            return False
        return True

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            region_name=REGION, config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "weed.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """SIGKILL, as when its machine dies (its graceful stop takes half a minute); what it
        acknowledged is in its files, and ``start()`` serves it again."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def in_bucket(settings: Settings, server: SeaweedFS, **more) -> Settings:
    """``settings`` with the images in a fresh bucket of ``server``."""
    bucket = server.create_bucket(f"t-{uuid.uuid4().hex[:16]}")
    return settings.model_copy(update={"blobs": f"s3://{bucket}/images", "s3_endpoint_url": server.endpoint,
                                       "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SecretStr(SECRET_KEY),
                                       "s3_region": REGION, **more})


def s3_env(settings: Settings, **more: str) -> dict[str, str]:
    return {**settings_env(settings), "IMAGESEARCH_BLOBS": settings.blobs, "IMAGESEARCH_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "IMAGESEARCH_S3_ACCESS_KEY_ID": ACCESS_KEY, "IMAGESEARCH_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "IMAGESEARCH_S3_REGION": REGION, **more}


def objects(server: SeaweedFS, settings: Settings) -> list[str]:
    """The keys of the images' objects in the bucket (not their thumbnails': ``thumbnail_objects``)."""
    return [key for key in _keys(server, settings) if "/thumbnails/" not in key]


def thumbnail_objects(server: SeaweedFS, settings: Settings) -> list[str]:
    return [key for key in _keys(server, settings) if "/thumbnails/" in key]


def _keys(server: SeaweedFS, settings: Settings) -> list[str]:
    bucket, _, prefix = settings.blobs.removeprefix("s3://").partition("/")
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """A running SeaweedFS with an S3 gateway (``endpoint``, ``ACCESS_KEY``/``SECRET_KEY``)."""
    server = SeaweedFS(ensure_weed())
    try:
        server.start()
        yield server
    finally:
        server.close()

