"""A real ``tritonserver`` for tests, from the ``nvidia-pytriton`` wheel.

The wheel ships the server binary (``pytriton/tritonserver/bin/tritonserver``), its libraries
(``nvidia_pytriton.libs``), the Python backend and one backend stub per Python version, but not the
ONNX Runtime backend. So the tests serve a *twin* of the real model repository: each model keeps
the real ``config.pbtxt`` (names, dims, max_batch_size, dynamic batching, warmup, response cache)
with only the backend-specific lines changed (Python backend, ``KIND_CPU``, no GPU accelerator), and
its ``model.py`` (``triton_onnx_model.py``) runs the **same** ``model.onnx`` with ONNX Runtime.

Only the binaries are used, never pytriton's Python package (it would pin numpy < 2 at import).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.support.cli import clean_env
from tests.support.net import free_port, wait_until
from tests.support.triton_twin import make_python_twin

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_BYTES = 16 << 20  # the local response cache the textual models enable


def _pytriton_dirs() -> tuple[Path, Path]:
    """(tritonserver folder, libraries folder) of the installed wheel, without importing pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed: `.venv/bin/pip install nvidia-pytriton` (test extra)")
    package = Path(list(spec.submodule_search_locations)[0])
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def install_server(target: Path) -> Path:
    """Copy the server with the Python backend stub for this interpreter beside ``backends/python/``."""
    source, _ = _pytriton_dirs()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"), dirs_exist_ok=True)
    shutil.copy2(stub, target / "backends" / "python" / "triton_python_backend_stub")
    return target


class TritonServer:
    """One tritonserver process on free 127.0.0.1 ports; ``kill()`` and ``start()`` keep the ports."""

    def __init__(self, model_repository: Path, workdir: Path, startup_timeout_s: float = 120.0):
        self.model_repository = Path(model_repository)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server_dir = install_server(self.workdir / "tritonserver")
        self.log_path = self.workdir / "tritonserver.log"
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        atexit.register(self.stop)  # no orphaned server when a script using it dies

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _env(self) -> dict:
        _, libs = _pytriton_dirs()
        env = clean_env()
        # The backend stub embeds this interpreter (its libpython first on the library path); it
        # finds its prefix, hence the venv's packages, through the `python3` first on PATH, as
        # pytriton does. The repository (imagesearch) goes on PYTHONPATH.
        lib_dirs = [sysconfig.get_config_var("LIBDIR"), str(libs), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(d for d in lib_dirs if d)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(REPO_ROOT)
        return env

    def start(self) -> TritonServer:
        if self.running:
            return self
        command = [
            str(self.server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.server_dir / 'backends'}",
            f"--cache-directory={self.server_dir / 'caches'}",
            f"--cache-config=local,size={CACHE_BYTES}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            # Room for a batch of 224px images in the Python backend's shared memory from the start.
            f"--backend-config=python,shm-default-byte-size={64 << 20}",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                        start_new_session=True)  # its own group: the stubs die with it
        log.close()
        self.wait_ready()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self) -> None:
        wait_until(lambda: httpx.get(f"{self.http_url}/v2/health/ready", timeout=2).status_code == 200,
                   self.startup_timeout_s, "tritonserver", process=self.process, log_tail=self.log_tail)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """Hard stop (SIGKILL to the server and its backend stubs), as when a container dies."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if not self.running:
            self.kill()  # reap stubs left behind, if any
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        self.kill()

    def restart(self) -> TritonServer:
        self.stop()
        return self.start()

    def inference_stats(self, model: str) -> dict:
        """The server's inference statistics of ``model`` (HTTP ``/v2/models/{model}/stats``)."""
        response = httpx.get(f"{self.http_url}/v2/models/{model}/stats", timeout=10)
        response.raise_for_status()
        return response.json()["model_stats"][0]


@pytest.fixture(scope="session")
def triton_server(test_model_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real tritonserver serving the Python-backend twin of the test model repository."""
    workdir = tmp_path_factory.mktemp("triton")
    twin = make_python_twin(test_model_repo, workdir / "model_repository")
    server = TritonServer(twin, workdir)
    try:
        yield server.start()
    finally:
        server.stop()
