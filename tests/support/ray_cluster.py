"""A real local Ray cluster for tests, and the session fixture ``ray_cluster`` that runs one.

A head and worker nodes are separate ``ray start --block`` processes with one CPU each, on
127.0.0.1, with their own temporary folder and ports, so that they never meet another Ray on the
machine. Each node is stopped through its own ``ray start`` process (SIGTERM: it ends its raylet
and the rest), never with ``ray stop``, which ends every Ray process on the machine. ``kill_raylet``
SIGKILLs one worker node's raylet, as when that machine dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_until

RAY = Path(sys.executable).parent / "ray"
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # small inputs; the default (30% of the memory) is far more than a test needs
# Ray's token authentication is left off on both sides, explicitly: a `ray.init()` that started a
# local Ray on this machine leaves a token in ~/.ray, which a head started later would then require.
DRIVER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# A node whose raylet died is declared dead after a few missed health checks of a second each, not
# after the default's half minute: only then are its tasks retried elsewhere.
HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                 "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def _die_with_parent() -> None:
    # A test process that dies without its teardown takes its nodes with it (``ray start`` ends its own on SIGTERM).
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: the test environment has no psutil)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _title(pid: int) -> str:
    """A Ray worker process's title: ``ray::<task or actor>`` while it runs one."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0]
    except OSError:
        return ""


class RayNode:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str]):
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                            cwd=log.parent, start_new_session=True, preexec_fn=_die_with_parent)

    def runs(self, title: str) -> bool:
        """Whether one of this node's worker processes runs a task or actor whose title starts so."""
        return any(_title(pid).startswith(title) for pid in _children(self.process.pid))

    def raylet(self) -> int | None:
        return next((pid for pid in _children(self.process.pid) if _name(pid) == "raylet"), None)

    def stop(self) -> None:
        """SIGTERM to its ``ray start``, which ends what it started; what is left after a few seconds is
        killed (the head waits half a minute for the detached actors Ray Data leaves on it)."""
        if self.process.poll() is not None:
            return
        below = _children(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class RayCluster:
    def __init__(self, workers: int = 2):
        self.workdir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's unix sockets live below it
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **DRIVER_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **HEALTH_CHECKS}
        self.driver_env = dict(DRIVER_ENV)  # for a driver's environment (`imagesearch ingest --ray`)
        self.workers_wanted = workers
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []

    def _node(self, name: str, *args: str) -> RayNode:
        return RayNode([str(RAY), "start", *args, "--num-cpus=1", "--block", "--node-ip-address=127.0.0.1",
                        f"--object-store-memory={OBJECT_STORE_BYTES}", f"--dashboard-agent-listen-port={free_port()}",
                        "--disable-usage-stats"], self.workdir / f"{name}.log", self.env)

    def start(self, timeout: float = 120) -> RayCluster:
        self.head = self._node("head", "--head", f"--port={self.port}", f"--temp-dir={self.workdir / 'session'}",
                               "--include-dashboard=false", f"--ray-client-server-port={free_port()}")
        wait_until(lambda: (self.workdir / "session" / "session_latest").exists(), timeout, "the Ray head",
                   process=self.head.process, log_tail=lambda: self.head.log.read_text()[-3000:] if self.head else "")
        for _ in range(self.workers_wanted):  # one at a time: several raylets starting at once on a busy
            self.add_worker(timeout)  # 2-core machine can miss Ray's own start-up deadline
        return self

    def add_worker(self, timeout: float = 120) -> None:
        self.workers.append(self._node(f"worker-{len(self.workers)}", f"--address={self.address}"))
        wait_until(lambda: self.alive_nodes() == 1 + sum(w.process.poll() is None for w in self.workers), timeout,
                   "a Ray worker node", process=self.workers[-1].process,
                   log_tail=lambda: self.workers[-1].log.read_text()[-3000:])

    def alive_nodes(self) -> int:
        done = subprocess.run([sys.executable, "-c", _COUNT_NODES, self.address], capture_output=True, text=True,
                              timeout=60, env=self.env)
        return int(done.stdout.strip() or 0)

    def replace_dead_workers(self, timeout: float = 120) -> None:
        """A new worker node for each whose raylet died (once the cluster has declared it dead)."""
        for node in [w for w in self.workers if w.raylet() is None]:
            node.stop()
            self.workers.remove(node)
        while len(self.workers) < self.workers_wanted:
            self.add_worker(timeout)

    def worker_running(self, title: str) -> int | None:
        """The index of a worker node running a task or actor whose title starts with ``title``."""
        return next((n for n, node in enumerate(self.workers) if node.runs(title)), None)

    def kill_raylet(self, worker: int) -> int:
        """SIGKILL a worker node's raylet (no goodbye to the cluster); returns its pid."""
        pid = self.workers[worker].raylet()
        assert pid is not None, "the worker node has no raylet"
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        for node in [*self.workers, *([self.head] if self.head else [])]:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


_COUNT_NODES = """
import logging, sys
import ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
print(sum(1 for node in ray.nodes() if node["Alive"]))
"""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and two worker nodes, one CPU each; ``address`` is what ``--ray`` takes."""
    cluster = RayCluster(workers=2)
    try:
        started = time.monotonic()
        cluster.start()
        print(f"ray cluster up in {time.monotonic() - started:.1f}s")
        yield cluster
    finally:
        cluster.stop()
