"""A real Elasticsearch node for tests, and the session fixture ``es_node`` that runs one.

The server is Elastic's own test distribution from Maven Central
(``org.elasticsearch.distribution.integ-test-zip:elasticsearch``: the server without most modules;
no painless, no reindex). The first use downloads it with Maven and unzips it into a cache folder
outside the repository; later runs and fresh clones reuse it. The node runs single-node on
127.0.0.1 with a small heap, free ports and a temporary data path, and can be stopped and started
again on the same data (the outage tests do that).

Elasticsearch refuses to run as root, so as root the node runs as ``nobody``; the cache then lives
in /var/cache (``/root`` is not readable by ``nobody``). ``IMAGESEARCH_TEST_CACHE`` overrides it.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cli import clean_env
from tests.support.net import free_port, wait_until

# The compose file runs the official image of this same version.
ES_VERSION = "9.5.4"
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"
HEAP = os.environ.get("IMAGESEARCH_TEST_ES_HEAP", "512m")
RUN_AS = "nobody"  # only when we are root


def cache_dir() -> Path:
    if os.environ.get("IMAGESEARCH_TEST_CACHE"):
        return Path(os.environ["IMAGESEARCH_TEST_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/imagesearch-tests")
    return Path.home() / ".cache" / "imagesearch-tests"


def java_home() -> str:
    """A JDK >= 21 (Elasticsearch 9 needs it): ES_JAVA_HOME, else the newest one in /usr/lib/jvm."""
    if os.environ.get("ES_JAVA_HOME"):
        return os.environ["ES_JAVA_HOME"]
    found = []
    for release in Path("/usr/lib/jvm").glob("*/release"):
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                major = int(line.split('"')[1].split(".")[0])
                if major >= 21 and (release.parent / "bin" / "java").exists():
                    found.append((major, str(release.parent)))
    if not found:
        raise RuntimeError("Elasticsearch needs a JDK >= 21: set ES_JAVA_HOME or install one (e.g. temurin-25-jdk)")
    return max(found)[1]


def ensure_distribution() -> Path:
    """The unzipped distribution in the cache, downloaded through Maven on first use."""
    root = cache_dir()
    home = root / f"elasticsearch-{ES_VERSION}"
    if (home / "bin" / "elasticsearch").exists():
        return home
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".elasticsearch-{ES_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be downloading it right now
        if (home / "bin" / "elasticsearch").exists():
            return home
        if shutil.which("mvn") is None:
            _install_maven()
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            done = subprocess.run(
                ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}", f"-DoutputDirectory={tmp}"],
                capture_output=True, text=True, timeout=900,
            )
            if done.returncode != 0:
                raise RuntimeError(f"mvn could not fetch {ARTIFACT}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
            with zipfile.ZipFile(Path(tmp) / f"elasticsearch-{ES_VERSION}.zip") as archive:
                for info in archive.infolist():
                    path = Path(archive.extract(info, Path(tmp) / "unzipped"))
                    mode = (info.external_attr >> 16) & 0o777  # zipfile drops the exec bits; keep them
                    if mode and not info.is_dir():
                        path.chmod(mode)
            (Path(tmp) / "unzipped" / f"elasticsearch-{ES_VERSION}").rename(home)
    return home


def _install_maven() -> None:
    """Maven fetches the distribution; as root on Debian/Ubuntu install it like `make system-deps` does."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "maven"], env=env, check=True, capture_output=True, timeout=900)
    if shutil.which("mvn") is None:
        raise RuntimeError("the Elasticsearch test node is fetched with Maven: install it (apt-get install maven)")


def _die_with_parent() -> None:
    # The launcher (and through it the server) gets SIGTERM if the test process dies without cleanup.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ElasticsearchNode:
    """One single-node cluster on 127.0.0.1; ``stop()`` and ``start()`` keep its data."""

    def __init__(self, home: Path, settings: dict[str, str] | None = None, heap: str = HEAP):
        self.home, self.heap = home, heap
        self.workdir = Path(tempfile.mkdtemp(prefix="imagesearch-es-"))
        self.http_port, self.transport_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.settings = {
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": str(self.http_port),
            "transport.port": str(self.transport_port),
            "path.data": str(self.workdir / "data"),
            "path.logs": str(self.workdir / "logs"),
            "cluster.name": "imagesearch-test",
            "xpack.security.enabled": "false",
            "cluster.routing.allocation.disk.threshold_enabled": "false",  # a full shared disk must not block writes
            **(settings or {}),
        }
        shutil.copytree(home / "config", self.workdir / "config")
        for sub in ("data", "logs", "tmp"):
            (self.workdir / sub).mkdir()
        self.user = pwd.getpwnam(RUN_AS) if os.geteuid() == 0 else None
        if self.user:
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.process: subprocess.Popen | None = None
        self.pid_file = self.workdir / "server.pid"  # the server JVM's pid (the process above is its launcher)

    def start(self, timeout: float = 240) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the node's process without waiting for it (a cluster's nodes start together)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JAVA_", "ES_"))}
        env.update(
            ES_JAVA_HOME=java_home(), ES_PATH_CONF=str(self.workdir / "config"), ES_TMPDIR=str(self.workdir / "tmp"),
            ES_JAVA_OPTS=f"-Xms{self.heap} -Xmx{self.heap}",
        )
        cmd = [str(self.home / "bin" / "elasticsearch"), "-p", str(self.pid_file)]
        for key, value in self.settings.items():
            cmd += ["-E", f"{key}={value}"]
        log = open(self.workdir / "console.log", "ab")
        self.process = subprocess.Popen(
            cmd, env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            user=self.user and self.user.pw_uid, group=self.user and self.user.pw_gid, preexec_fn=_die_with_parent,
        )
        log.close()

    def wait_ready(self, timeout: float) -> None:
        def healthy() -> bool:
            r = httpx.get(f"{self.url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}, timeout=5)
            return r.status_code == 200 and r.json()["status"] in ("green", "yellow")

        wait_until(healthy, timeout, "Elasticsearch", process=self.process, log_tail=self.log_tail, interval=0.5)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "console.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # the launcher shuts the server down cleanly
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server itself, as when its machine dies: no clean shutdown, no goodbye to the cluster."""
        assert self.process is not None and self.process.poll() is None, "the node is not running"
        os.kill(int(self.pid_file.read_text()), signal.SIGKILL)
        self.process.wait(60)  # the launcher exits with its server
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class SecuredNode(ElasticsearchNode):
    """A node with security on: TLS on HTTP (a private CA made with openssl) and a file-realm user;
    ``elastic_password``: the built-in `elastic` user's too (the keystore's bootstrap.password, what the
    official image's entrypoint does with ELASTIC_PASSWORD)."""

    def __init__(self, home: Path, user: str, password: str, heap: str = HEAP, elastic_password: str = ""):
        certs = {"key": "certs/node.key", "certificate": "certs/node.crt", "certificate_authorities": "certs/ca.crt"}
        super().__init__(home, {
            "xpack.security.enabled": "true", "xpack.security.http.ssl.enabled": "true",
            **{f"xpack.security.http.ssl.{k}": v for k, v in certs.items()},
        }, heap)
        self.url = f"https://127.0.0.1:{self.http_port}"
        config = self.workdir / "config"
        (config / "certs").mkdir()
        self.ca_cert = config / "certs" / "ca.crt"
        self._make_certificates(config / "certs")
        env = clean_env(ES_JAVA_HOME=java_home(), ES_PATH_CONF=str(config))
        subprocess.run([str(home / "bin" / "elasticsearch-users"), "useradd", user, "-p", password, "-r", "superuser"],
                       env=env, check=True, capture_output=True, timeout=120)
        if elastic_password:
            for args, stdin in ((["create"], None), (["add", "-x", "-f", "bootstrap.password"], elastic_password)):
                subprocess.run([str(home / "bin" / "elasticsearch-keystore"), *args], input=stdin, text=True, env=env,
                               check=True, capture_output=True, timeout=120)
        if self.user:
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    @staticmethod
    def _make_certificates(folder: Path) -> None:
        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                "-subj", "/CN=imagesearch test CA", "-days", "2")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=localhost")
        (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "node.crt", "-days", "2", "-extfile", "san.ext")

    def wait_ready(self, timeout: float) -> None:
        # Any HTTP answer (401 without credentials) means it is up.
        wait_until(lambda: httpx.get(f"{self.url}/_cluster/health", verify=str(self.ca_cert), timeout=5) is not None,
                   timeout, "Elasticsearch (TLS)", process=self.process, log_tail=self.log_tail, interval=0.5)


class Cluster:
    """``size`` nodes on 127.0.0.1 that find each other (seed hosts) and form one cluster, every node
    master-eligible: losing one of three keeps a majority."""

    def __init__(self, size: int = 3, heap: str = HEAP):
        home = ensure_distribution()
        self.nodes = [ElasticsearchNode(home, heap=heap) for _ in range(size)]
        names = [f"node-{i}" for i in range(size)]
        seeds = ",".join(f"127.0.0.1:{node.transport_port}" for node in self.nodes)
        for name, node in zip(names, self.nodes, strict=True):
            del node.settings["discovery.type"]
            node.settings.update({"node.name": name, "cluster.name": f"imagesearch-test-{os.getpid()}",
                                  "discovery.seed_hosts": seeds, "cluster.initial_master_nodes": ",".join(names)})
        self.urls = [node.url for node in self.nodes]

    def start(self, timeout: float = 300) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)
        for node in self.nodes:  # bootstrapped: a node that restarts must join, not bootstrap again
            del node.settings["cluster.initial_master_nodes"]
        self.wait_health("green", len(self.nodes), timeout)

    def wait_health(self, status: str, nodes: int, timeout: float = 300) -> dict:
        """Wait (asking any running node) until the cluster has ``nodes`` nodes and at least ``status``."""
        answer: dict = {}

        def reached() -> bool:
            for node in self.nodes:
                if node.process is None:
                    continue
                r = httpx.get(f"{node.url}/_cluster/health", timeout=10,
                              params={"wait_for_status": status, "wait_for_nodes": str(nodes), "timeout": "2s"})
                answer.update(r.json())
                return r.status_code == 200 and not answer.get("timed_out")
            return False

        wait_until(reached, timeout, f"the cluster ({status}, {nodes} nodes)", log_tail=lambda: str(answer), interval=1)
        return answer

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def start_node(settings: dict[str, str] | None = None, heap: str = HEAP) -> ElasticsearchNode:
    node = ElasticsearchNode(ensure_distribution(), settings, heap)
    atexit.register(node.close)  # also when the session is interrupted
    node.start()
    return node


SECURED_USER, SECURED_PASSWORD = "imagesearch", "test-password-1"


@pytest.fixture(scope="session")
def secured_es_node() -> Iterator[SecuredNode]:
    """One node with security on, shared by the tests that need one: the file-realm superuser
    ``SECURED_USER`` / ``SECURED_PASSWORD``, and `elastic` with the compose example's ELASTIC_PASSWORD."""
    from tests.support.compose import load_env

    node = SecuredNode(ensure_distribution(), SECURED_USER, SECURED_PASSWORD,
                       elastic_password=load_env()["ELASTIC_PASSWORD"])
    atexit.register(node.close)
    node.start()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def es_node() -> Iterator[ElasticsearchNode]:
    """A running node (``.url``); tests may ``stop()``/``start()`` it but must leave it running."""
    node = start_node()
    try:
        yield node
    finally:
        node.close()
