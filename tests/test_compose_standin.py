"""Stand-in run of `docker compose up` (no Docker engine here): the compose services as local processes.

Each service of docker-compose.yml runs with the command and the IMAGESEARCH_* environment the
compose file gives it, read from the file, translated only where a container differs from a local
process:

- container paths: each service gets a folder standing in for its filesystem, with its volumes and
  bind mounts as symbolic links at their mount points (`images`, `model-repository`, `./data`);
  absolute paths in its command and environment are taken relative to that folder;
- addresses: the service names (`es`, `triton`, `api`) become 127.0.0.1 and each container port
  the free local port its stand-in listens on; listen addresses 0.0.0.0 become 127.0.0.1;
- Elasticsearch is a node of the test distribution (tests/support/es_node.py, the version of the
  image) with security on as in compose: TLS on HTTP with a private CA, whose certificate sits where
  the `es-certs` job puts it in its volume, and the `elastic` user's password from the compose
  environment (the keystore's bootstrap.password, as the image's entrypoint sets it);
  Triton is the real tritonserver serving the Python-backend twin (tests/support/triton_server.py)
  of the repository the export job left in the model volume.

Test-only additions, each needed because this is one shared 2-core machine: the image server is on
127.0.0.1 (so the downloader may fetch private addresses) and the embedder uses one decode worker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.support import compose as c
from tests.support.browser import search_in_browser
from tests.support.search_api import make_shapes, wait_for
from tests.support.triton_server import TritonServer, free_port
from tests.support.triton_twin import make_python_twin

VENV_BIN = Path(sys.executable).parent
TEST_ONLY_ENV = {
    "downloader": {"IMAGESEARCH_ALLOW_PRIVATE_NETWORKS": "true"},
    "embedder": {"IMAGESEARCH_DECODE_WORKERS": "1"},
}
WORKDIRS = {"es": "/usr/share/elasticsearch"}  # the images' WORKDIR; ours use /home/imagesearch


class Standin:
    """Runs compose services as processes under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, project: dict, ports: dict[tuple[str, int], int]):
        self.root, self.project, self.ports = root, project, ports
        self.bind_root = root / "project"  # stands in for the checkout the compose file lives in
        self.processes: list[tuple[str, subprocess.Popen]] = []
        for name, service in project["services"].items():
            fs = self.fs(name)
            for source, target, _ in c.mounts(service):
                backing = (self.bind_root / source) if source.startswith(".") else root / "volumes" / source
                backing.mkdir(parents=True, exist_ok=True)
                (fs / target.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (fs / target.lstrip("/")).symlink_to(backing, target_is_directory=True)

    def fs(self, name: str) -> Path:
        return self.root / "fs" / name

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def path(self, name: str, value: str) -> str:
        """A container path -> the same path in the service's stand-in filesystem."""
        return str(self.fs(name) / value.lstrip("/")) if value.startswith("/") else value

    def address(self, value: str) -> str:
        """``scheme://service:port`` or ``service:port`` -> the local stand-in's address."""
        try:
            parts = urlsplit(value if "//" in value else f"//{value}")
            port = self.ports.get((parts.hostname, parts.port))
        except ValueError:  # not an address, e.g. a JSON list
            return value
        if port is None:
            return value
        local = urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, parts.fragment))
        return local if "//" in value else local.removeprefix("//")

    def argv(self, name: str) -> list[str]:
        out = []
        for arg in c.command_argv(self.project["services"][name]):
            option, eq, value = arg.partition("=")
            out.append(f"{option}={self.path(name, value)}" if eq and option.startswith("--") else self.path(name, arg))
        return out

    def env(self, name: str) -> dict[str, str]:
        service_env = c.environment(self.project["services"][name])
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGESEARCH_")}
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"  # `imagesearch` and `python`, as in the image
        env["PYTHONPATH"] = str(c.REPO_ROOT)
        for key, value in service_env.items():
            if key in ("IMAGESEARCH_API_HOST", "IMAGESEARCH_UI_HOST") and value == "0.0.0.0":
                value = "127.0.0.1"
            env[key] = self.address(self.path(name, value))
        for key, setting in (("IMAGESEARCH_API_PORT", ("api", 8000)), ("IMAGESEARCH_UI_PORT", ("ui", 8501))):
            if name == setting[0]:  # the container port, published on a free local port
                env[key] = str(self.ports[setting])
        env.update(TEST_ONLY_ENV.get(name, {}))
        return env

    def cwd(self, name: str) -> Path:
        workdir = self.fs(name) / WORKDIRS.get(name, "/home/imagesearch").lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def run(self, name: str, timeout: float = 300) -> str:
        """A one-shot service: runs to completion (service_completed_successfully)."""
        with open(self.log(name), "w") as log:
            done = subprocess.run(self.argv(name), env=self.env(name), cwd=self.cwd(name), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        output = self.log(name).read_text()
        assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{output[-3000:]}"
        return output

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.log(name), "w")
        process = subprocess.Popen(self.argv(name), env=self.env(name), cwd=self.cwd(name), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append((name, process))
        return process

    def healthcheck(self, name: str, **env_changes: str) -> subprocess.CompletedProcess:
        """The service's compose healthcheck, run in its working directory against its local port."""
        service = self.project["services"][name]
        argv = c.healthcheck_argv(service)
        for (host, container_port), local in self.ports.items():
            if host == name:
                argv = [a.replace(f"localhost:{container_port}", f"localhost:{local}") for a in argv]
        timeout = float(str(service["healthcheck"].get("timeout", "30s")).rstrip("s"))
        return subprocess.run(argv, env={**self.env(name), **env_changes}, cwd=self.cwd(name), capture_output=True,
                              text=True, timeout=timeout + 5)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for name, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)  # what `docker compose stop` sends
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait()
            codes[name] = process.returncode
        return codes


def test_compose_services_as_local_processes(test_model_repo, image_server, tmp_path, secured_es_node):
    env = {**c.load_env(), "IMAGESEARCH_MODEL": "shapes-tiny", "IMAGESEARCH_ARCH": "shapes-tiny",
           "IMAGESEARCH_PRETRAINED": "none"}
    project = c.load_project([c.COMPOSE_FILE], env)
    es = secured_es_node  # TLS with its own CA, and `elastic` with the compose example's ELASTIC_PASSWORD
    assert c.environment(project["services"]["es"])["ELASTIC_PASSWORD"] == c.load_env()["ELASTIC_PASSWORD"]
    triton = standin = None
    try:
        ports = {("es", 9200): es.http_port, ("api", 8000): free_port(), ("ui", 8501): free_port()}
        # export: the model volume already holds the test model, so `--if-missing` leaves it alone.
        twin_dir = tmp_path / "triton"
        standin_root = tmp_path / "run"
        shutil.copytree(test_model_repo, standin_root / "volumes" / "model-repository")
        # Triton's ports are picked when it is created; the stand-in maps triton:8001/8000/8002 to them.
        triton = TritonServer(make_python_twin(standin_root / "volumes" / "model-repository", twin_dir / "repository"),
                              twin_dir)
        ports.update({("triton", 8000): triton.http_port, ("triton", 8001): triton.grpc_port,
                      ("triton", 8002): triton.metrics_port})
        standin = Standin(standin_root, project, ports)
        # es-certs: its CA certificate where the job writes it in the es-certs volume.
        (standin.volume("es-certs") / "ca").mkdir(parents=True)
        shutil.copy2(es.ca_cert, standin.volume("es-certs") / "ca" / "ca.crt")
        before = sorted(p.name for p in standin.volume("model-repository").rglob("*"))
        assert "already" in standin.run("export")
        assert sorted(p.name for p in standin.volume("model-repository").rglob("*")) == before

        # triton: healthy only once it serves the models the compose command loads.
        assert standin.healthcheck("triton").returncode != 0, "healthcheck passes with Triton down"
        triton.start()
        assert standin.healthcheck("triton").returncode == 0, triton.log_tail()
        for model in [a.split("=", 1)[1] for a in c.command_argv(project["services"]["triton"]) if a.startswith("--load-model=")]:
            assert httpx.get(f"{triton.http_url}/v2/models/{model}/ready", timeout=5).status_code == 200, model
        assert "nv_inference_count" in httpx.get(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=5).text

        # es: the healthcheck the compose file declares (TLS with the CA, the password) passes,
        # and fails with a wrong password.
        es_check = standin.healthcheck("es")
        assert es_check.returncode == 0, es_check.stdout + es_check.stderr
        assert standin.healthcheck("es", ELASTIC_PASSWORD="wrong-password").returncode != 0

        # downloader (one-shot) from the mounted data/image_urls.txt, served by a local HTTP server.
        images = make_shapes(per_class=3, seed=7)
        lines = []
        for i, image in enumerate(images):
            path = f"/img/{image.colour}_{image.shape}_{i}.jpg"
            image_server.add(path, image.data)
            lines.append(image_server.url(path))
        (standin.bind_root / "data").mkdir(parents=True, exist_ok=True)
        (standin.bind_root / "data" / "image_urls.txt").write_text("\n".join(lines + [lines[0]]) + "\n")
        standin.run("downloader")
        assert len(list(standin.volume("images").glob("??/*.*"))) == len(images)  # the repeated URL: no second file

        # embedder (long-running, --follow) and api; then ui once the api is healthy.
        embedder = standin.start("embedder")
        api = standin.start("api")
        api_url = f"http://127.0.0.1:{ports[('api', 8000)]}"
        wait_for(f"{api_url}/healthz", timeout=120, process=api)
        assert standin.healthcheck("api").returncode == 0
        deadline = time.monotonic() + 180
        while (counts := httpx.get(f"{api_url}/status", timeout=10).json()["counts"])["embedded"] < len(images):
            assert embedder.poll() is None, standin.log("embedder").read_text()[-3000:]
            assert time.monotonic() < deadline, f"not all embedded: {counts}"
            time.sleep(0.5)
        assert (counts["images"], counts["pending"], counts["failed_urls"]) == (len(images), 0, 0)

        # search through /search: the tiny model finds the red circles.
        # Elasticsearch makes new vectors searchable within its refresh interval (1 s): wait until all
        # are, or the UI's search below may see more of them than this one did.
        deadline = time.monotonic() + 30
        while len(found := httpx.get(f"{api_url}/search", params={"q": "a red circle", "k": len(images)},
                                     timeout=30).json()["results"]) < len(images):
            assert time.monotonic() < deadline, f"only {len(found)} of {len(images)} images searchable"
            time.sleep(0.5)
        results = httpx.get(f"{api_url}/search", params={"q": "a red circle", "k": 12}, timeout=30).json()["results"]
        assert [r["id"] for r in results] == [r["id"] for r in found[:12]]
        assert {r["url"] for r in results[:3]} <= {l for l in lines if "red_circle" in l}, [r["url"] for r in results]

        # ui: healthcheck fails before it runs, passes after; then the same search in Chromium.
        assert standin.healthcheck("ui").returncode != 0
        ui = standin.start("ui")
        ui_url = f"http://127.0.0.1:{ports[('ui', 8501)]}"
        wait_for(f"{ui_url}/_stcore/health", timeout=120, process=ui)
        assert standin.healthcheck("ui").returncode == 0
        shown = search_in_browser(ui_url, "a red circle", expected=len(results))
        assert shown == [r["id"][:12] for r in results]

        codes = standin.stop_all()
        assert set(codes.values()) == {0}, codes  # a clean stop on SIGTERM, as `docker compose stop` sends
        assert standin.healthcheck("api").returncode != 0
    finally:
        if standin is not None:
            standin.stop_all()
        if triton is not None:
            triton.stop()
