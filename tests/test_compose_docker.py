"""`docker compose up` for real: the project's images built and the whole stack run in a real
Docker engine, exactly as the docs tell a user, checked through the published ports only.

The engine, Compose v2 and the stand-ins of the three third-party images (no registry is reachable
here) come from ``tests/support/docker_engine.py``. The project is a copy of this checkout's files
with a ``.env`` made from ``.env.example``: the trained test model's checkpoint (in ./checkpoints)
instead of downloaded weights, free host ports, and what this machine needs to build at all (its
CA bundle as the build secret, PyPI's torch because the PyTorch wheel index is not reachable).
``make compose-test`` runs this module alone.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.browser import search_in_browser
from tests.support.docker_engine import (
    CA_BUNDLE,
    PYTHON_BASE,
    DockerEngine,
    build_standins,
    compose_ps,
    host_leftovers,
    wait_for_healthy,
)
from tests.support.net import free_port, wait_until
from tests.support.search_api import make_shapes

REPO_ROOT = Path(__file__).resolve().parents[1]
# the documented CPU command with BLIP-2 beside the CLIP model
README_COMMAND = ["compose", "-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml", "-f", "docker-compose.blip2.yml"]
LONG_RUNNING = ["es", "triton", "api", "ui", "embedder"]
HEALTHCHECKED = ["es", "triton", "api", "ui"]
ONE_SHOT = ["es-certs", "export", "export-blip2", "downloader"]
OURS = ["export", "export-blip2", "downloader", "embedder", "api", "ui"]  # built from this checkout
BLIP2 = "blip2-tiny-compose"
URL_HOST = "images.test"  # the test's image server on the compose network
# API keys in .env: the API asks for one on every route but /healthz and /metrics; the UI sends its own.
READ = {"X-API-Key": "compose-test-read-key"}
ADMIN = {"X-API-Key": "compose-test-admin-key"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = DockerEngine(tmp_path_factory.mktemp("docker")).start()
    try:
        build_standins(engine)
        yield engine
    finally:
        engine.stop()
        left = host_leftovers()
        assert not left, f"the Docker engine left this behind: {left}"


class Project:
    """A user's checkout with its .env, and `docker compose` run in it."""

    def __init__(self, engine: DockerEngine, folder: Path, model_dir: Path, blip2_dir: Path):
        self.engine, self.folder = engine, folder
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                               text=True, check=True).stdout.split("\n")
        for name in filter(None, files):
            if (REPO_ROOT / name).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / name, folder / name)
        checkpoints = folder / "checkpoints"
        shutil.copytree(model_dir / "config", checkpoints / "config")
        shutil.copy2(model_dir / "checkpoint.pt", checkpoints / "checkpoint.pt")
        shutil.copytree(blip2_dir, checkpoints / "blip2-tiny-hf")  # a transformers model folder, as downloaded
        for path in (checkpoints / "blip2-tiny-hf").iterdir():
            path.chmod(0o644)  # transformers saves its weights 0600; the export container's user must read them
        self.ports = {name: free_port() for name in ("API_PORT", "UI_PORT", "ES_PORT", "TRITON_GRPC_PORT",
                                                     "TRITON_METRICS_PORT")}
        env = (folder / ".env.example").read_text()
        changes = {
            "ELASTIC_PASSWORD": "compose-test-password", "ES_HEAP": "512m", "ES_MEM_LIMIT": "1536m",
            "IMAGESEARCH_MODEL": "shapes-tiny-compose", "IMAGESEARCH_ARCH": "shapes-tiny",
            "IMAGESEARCH_PRETRAINED": "/checkpoints/checkpoint.pt", "IMAGESEARCH_ARCH_CONFIG": "/checkpoints/config",
            "BLIP2_MODEL": BLIP2, "BLIP2_PRETRAINED": "/checkpoints/blip2-tiny-hf", "BLIP2_VARIANT": "int8",
            "BLIP2_TRITON_KIND": "cpu",
            # The image server is a container on the compose network: a private address.
            "DOWNLOAD_ALLOWED_NETWORKS": '["172.16.0.0/12", "192.168.0.0/16"]',
            "BUILD_CA_BUNDLE": str(CA_BUNDLE) if CA_BUNDLE.exists() else "",
            "TORCH_INDEX_URL": "https://pypi.org/simple",  # download.pytorch.org is not reachable here
            # The test machines' disk is large and shared: 90% used can still leave 20 GB free.
            "ES_DISK_WATERMARK_LOW": "2gb", "ES_DISK_WATERMARK_HIGH": "1gb", "ES_DISK_WATERMARK_FLOOD": "512mb",
            "API_KEYS": READ["X-API-Key"], "ADMIN_API_KEYS": ADMIN["X-API-Key"], "UI_API_KEY": "compose-test-ui-key",
            **{name: str(port) for name, port in self.ports.items()},
        }
        lines = [line for line in env.splitlines() if line.split("=", 1)[0] not in changes]
        (folder / ".env").write_text("\n".join(lines + [f"{k}={v}" for k, v in changes.items()]) + "\n")
        self.api = f"http://127.0.0.1:{self.ports['API_PORT']}"
        self.ui = f"http://127.0.0.1:{self.ports['UI_PORT']}"
        (folder / "data").mkdir(exist_ok=True)
        (folder / "data" / "image_urls.txt").write_text("")

        self.command = [
            *README_COMMAND,
            *self._sandbox_override(folder.parent / "sandbox-limits.yml"),
            "--project-directory",
            str(folder),
        ]

    @staticmethod
    def _sandbox_override(path: Path) -> list[str]:
        """Some test machines cannot raise resource limits (no CAP_SYS_RESOURCE, as under rootless
        Docker): there no container gets the `memlock: -1` and `nofile: 65536` that es and triton ask
        for. Only there, an extra file caps those limits at what the machine allows."""
        asked = {"memlock": (resource.RLIMIT_MEMLOCK, resource.RLIM_INFINITY), "nofile": (resource.RLIMIT_NOFILE, 65536)}
        caps = {name: hard for name, (which, wanted) in asked.items()
                if (hard := resource.getrlimit(which)[1]) != resource.RLIM_INFINITY
                and (wanted == resource.RLIM_INFINITY or hard < wanted)}
        if not caps:
            return []
        ulimits = "".join(f"      {name}: {hard}\n" for name, hard in caps.items())
        path.write_text(f"services:\n  es:\n    ulimits:\n{ulimits}  triton:\n    ulimits:\n{ulimits}")
        return ["-f", str(path)]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return self.engine.docker(*self.command, *args, timeout=timeout, check=check, cwd=self.folder)

    def report(self) -> None:
        """Print every container's state and its last log lines (pytest shows them for a failed test)."""
        print(self.compose("ps", "--all", check=False).stdout)
        for service in (*ONE_SHOT, *LONG_RUNNING):
            logs = self.compose("logs", "--no-color", "--tail", "40", service, check=False)
            print(f"--- {service} ---\n{logs.stdout}{logs.stderr}")

    def ps(self) -> dict[str, dict]:
        return compose_ps(self.engine, self.command)

    def wait_healthy(self, timeout: float = 900) -> dict[str, dict]:
        return wait_for_healthy(self.engine, self.command, HEALTHCHECKED, timeout)

    def inspect(self, service: str, template: str) -> str:
        container = self.compose("ps", "--all", "-q", service).stdout.split()[0]
        return self.engine.docker("inspect", "--format", template, container).stdout.strip()

    def watch(self) -> Timeline:
        """Note, from now on, when each service starts, ends (one-shot jobs) or turns healthy."""
        return Timeline(self)

    def status(self) -> dict:
        return httpx.get(f"{self.api}/status", headers=READ, timeout=30).json()["counts"]

    def model_counts(self) -> dict[str, dict]:
        models = httpx.get(f"{self.api}/status", headers=READ, timeout=30).json()["models"]
        return {m["slug"]: m["counts"] for m in models}

    def wait_embedded(self, count: int, timeout: float = 300) -> dict:
        """Until ``count`` images are embedded with every model; the default model's counts."""
        wait_until(lambda: all(c["embedded"] >= count for c in self.model_counts().values()), timeout, f"{count} embedded")
        return self.status()

    def search(self, query: str, k: int, model: str | None = None) -> list[dict]:
        params = {"q": query, "k": k, **({"model": model} if model else {})}
        response = httpx.get(f"{self.api}/search", params=params, headers=READ, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == (model or "shapes-tiny-compose")
        return response.json()["results"]

    def searchable(self, count: int, model: str | None = None) -> list[dict]:
        """All ``count`` images, once Elasticsearch's refresh made every vector searchable."""
        deadline = time.monotonic() + 60
        while len(results := self.search("a red circle", count, model)) < count:
            assert time.monotonic() < deadline, f"only {len(results)} of {count} searchable"
            time.sleep(0.5)
        return results


class ImageHost:
    """The test's image server: a container on the compose network, serving a folder over HTTP."""

    def __init__(self, engine: DockerEngine, folder: Path, network: str):
        self.engine, self.name = engine, "imagesearch-test-images"
        engine.docker("rm", "-f", self.name, check=False)
        engine.docker("run", "-d", "--name", self.name, "--network", network, "--network-alias", URL_HOST,
                      "-v", f"{folder}:/srv:ro", PYTHON_BASE, "python3", "-m", "http.server", "80", "--directory", "/srv")

    def image_requests(self) -> int:
        log = self.engine.docker("logs", self.name).stderr
        return sum('"GET /img/' in line for line in log.splitlines())

    def close(self) -> None:
        self.engine.docker("rm", "-f", self.name, check=False)


class Timeline:
    """A thread polling ``compose ps``: the first moment each service was seen in each state, in
    seconds from the start (the phases of a start, printed by the test: where its time goes)."""

    def __init__(self, project: Project):
        self.project, self.started = project, time.monotonic()
        self.seen: dict[str, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                rows = self.project.ps()
            except Exception:  # noqa: BLE001 - the project may not exist yet while it builds
                continue
            for service, row in rows.items():
                state = row.get("Health") or row.get("State", "")
                self.seen.setdefault(f"{service} {state}", time.monotonic() - self.started)

    def stop(self) -> str:
        self.stopping.set()
        self.thread.join()
        return ", ".join(f"{event} {when:.0f}" for event, when in sorted(self.seen.items(), key=lambda item: item[1]))


def write_images(folder: Path, prefix: str, per_class: int, seed: int) -> tuple[list[str], dict[str, str]]:
    """Images under ``folder/img``; their URLs on the image host, and the URL of each by file name."""
    urls, classes = [], {}
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(make_shapes(per_class=per_class, seed=seed)):
        name = f"{prefix}{image.colour}_{image.shape}_{i}.jpg"
        (folder / "img" / name).write_bytes(image.data)
        urls.append(f"http://{URL_HOST}/img/{name}")
        classes[urls[-1]] = f"{image.colour}_{image.shape}"
    return urls, classes


@pytest.mark.timeout(3600)  # a cold first run builds everything, torch included
def test_compose_up_for_real(engine, test_model_repo, blip2_repo, tmp_path):
    project = Project(engine, tmp_path / "checkout", test_model_repo.parent, blip2_repo.parent / "blip2-tiny-hf")
    served = tmp_path / "served"
    images = None
    phases: list[tuple[str, float]] = []  # (phase, when it began): where the test's time goes, printed at the end

    def phase(name: str) -> None:
        phases.append((name, time.monotonic()))

    project.compose("down", "-v", "--remove-orphans")  # the engine's data root is kept between runs
    try:
        # --- first start: build our images, every service healthy or done -------------------------
        phase("first start")
        started, timeline = time.monotonic(), project.watch()
        project.compose("up", "-d", "--build", timeout=3600)
        rows = project.wait_healthy()
        first_up_s = time.monotonic() - started
        print(f"\n[compose] first start, seconds until each service was first seen so: {timeline.stop()}")
        for service in ONE_SHOT:
            assert (rows[service]["State"], rows[service]["ExitCode"]) == ("exited", 0), rows[service]
        for service in LONG_RUNNING:
            assert rows[service]["State"] == "running", rows[service]
        assert "exported" in project.compose("logs", "export").stdout.lower()
        assert f"exported {BLIP2} (blip2, 4 x 16-d vectors per image" in project.compose("logs", "export-blip2").stdout

        # --- ingest through the containers ---------------------------------------------------------
        phase("ingest")
        urls, classes = write_images(served, "", per_class=3, seed=11)
        network = project.inspect("api", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}")
        images = ImageHost(engine, served, network)
        # One caption (URL TAB caption): the hybrid search below must find it by its words.
        captioned = next(u for u in urls if classes[u] == "green_triangle")
        lines = [f"{u}\tthe eiffel tower at dusk" if u == captioned else u for u in urls]
        (project.folder / "data" / "image_urls.txt").write_text("\n".join(lines + urls[:1]) + "\n")
        project.compose("run", "--rm", "downloader", timeout=600)  # the docs' "Ingesting later"
        assert images.image_requests() == len(urls)  # the repeated URL: fetched once
        counts = project.wait_embedded(len(urls))
        assert (counts["images"], counts["pending"], counts["failed_urls"]) == (len(urls), 0, 0), counts
        assert set(project.model_counts()) == {"shapes-tiny-compose", BLIP2}  # CLIP the default, BLIP-2 beside it

        # --- BLIP-2 through Triton: every image, by the best of its query vectors --------------------
        phase("BLIP-2 search")
        assert {r["url"] for r in project.searchable(len(urls), model=BLIP2)} == set(urls)

        # --- search on the published API port: text and image ---------------------------------------
        phase("searches")
        everything = project.searchable(len(urls))
        assert len({r["id"] for r in everything}) == len(urls)
        top = project.search("a red circle", 3)
        assert all(classes[r["url"]] == "red_circle" for r in top), [r["url"] for r in top]
        example = (served / "img" / next(u.rsplit("/", 1)[1] for u in urls if classes[u] == "blue_square")).read_bytes()
        by_image = httpx.post(f"{project.api}/search/image", files={"file": ("q.jpg", example, "image/jpeg")},
                              data={"k": "3"}, headers=READ, timeout=60)
        assert by_image.status_code == 200, by_image.text
        assert all(classes[r["url"]] == "blue_square" for r in by_image.json()["results"]), by_image.json()

        # --- keyword and hybrid search over the captions (Elasticsearch BM25, fused in the API) ------
        phase("hybrid")
        hybrid = httpx.get(f"{project.api}/search", params={"q": "eiffel tower", "k": 5, "mode": "hybrid"},
                           headers=READ, timeout=60).json()["results"]
        assert (hybrid[0]["url"], hybrid[0]["matched"]) == (captioned, ["vector", "text"]), hybrid[0]

        # --- the API keys from .env: none, or a wrong one, is refused; the probes stay open --------
        phase("keys")
        assert httpx.get(f"{project.api}/search", params={"q": "a red circle"}, timeout=30).status_code == 401
        assert httpx.get(f"{project.api}/status", headers={"X-API-Key": "wrong"}, timeout=30).status_code == 401
        assert httpx.get(f"{project.api}/healthz", timeout=30).status_code == 200

        # --- the UI on its published port, in Chromium (it sends UI_API_KEY) ------------------------
        phase("UI")
        shown = search_in_browser(project.ui, "a red circle", expected=12)
        assert shown == [r["id"][:12] for r in project.search("a red circle", 12)]

        # --- down, then up again: the volumes keep images, vectors and the model -------------------
        phase("down and up")
        before = project.status()
        project.compose("down")
        started = time.monotonic()
        project.compose("up", "-d", "--build", timeout=3600)
        project.wait_healthy()
        second_up_s = time.monotonic() - started
        assert project.status() == before
        assert "already" in project.compose("logs", "export").stdout  # the model was not exported again
        assert "already" in project.compose("logs", "export-blip2").stdout
        wait_until(lambda: project.ps()["downloader"]["State"] == "exited", 300, "the downloader's second run")
        assert project.ps()["downloader"]["ExitCode"] == 0
        assert images.image_requests() == len(urls)  # nothing downloaded again
        assert project.status() == before  # nothing embedded again

        # --- SIGKILL of the embedder in the middle of embedding, then up: nothing lost or doubled ---
        phase("embedder killed")
        more, _ = write_images(served, "more-", per_class=25, seed=12)
        project.compose("stop", "embedder")
        (project.folder / "data" / "image_urls.txt").write_text("\n".join(more) + "\n")
        project.compose("run", "--rm", "downloader", timeout=600)
        total = len(urls) + len(more)
        assert project.status()["images"] == total
        project.compose("start", "embedder")
        wait_until(lambda: project.status()["embedded"] > len(urls), 300, "the embedder under way", interval=0.1)
        project.compose("kill", "-s", "SIGKILL", "embedder")
        at_kill = project.status()
        assert at_kill["embedded"] < total, f"embedding ended before the kill: {at_kill}"
        assert project.inspect("embedder", "{{.State.ExitCode}}") == "137"
        project.compose("up", "-d")
        counts = project.wait_embedded(total)
        assert (counts["images"], counts["embedded"], counts["pending"]) == (total, total, 0), counts
        assert len({r["id"] for r in project.searchable(100)}) == 100  # the API's largest k

        # --- Elasticsearch stopped: 503 with Retry-After; started: back, the API never restarted ---
        phase("Elasticsearch stopped")
        api_started = project.inspect("api", "{{.State.StartedAt}}")
        project.compose("stop", "es")
        health = httpx.get(f"{project.api}/healthz", timeout=60)
        assert health.status_code == 503, health.text
        down = httpx.get(f"{project.api}/search", params={"q": "a red circle"}, headers=READ, timeout=120)
        assert down.status_code == 503 and down.headers.get("retry-after"), (down.status_code, down.text)
        project.compose("start", "es")
        wait_until(lambda: httpx.get(f"{project.api}/healthz", timeout=30).status_code == 200, 300, "API healthy again")
        assert len(project.search("a red circle", 5)) == 5
        assert project.inspect("api", "{{.State.StartedAt}}") == api_started

        # --- removal with an admin key: the record, its vectors and its file (in the images volume) go
        phase("removal")
        victim = project.search("a red circle", 1)[0]["id"]
        assert httpx.delete(f"{project.api}/images/{victim}", headers=READ, timeout=60).status_code == 403
        removed = httpx.delete(f"{project.api}/images/{victim}", headers=ADMIN, timeout=60)
        assert removed.status_code == 200 and removed.json()["files"] == 1, removed.text
        assert httpx.get(f"{project.api}/images/{victim}", headers=READ, timeout=30).status_code == 404
        assert victim not in {r["id"] for r in project.search("a red circle", 100)}
        assert project.status()["images"] == total - 1

        # --- non-root, no restarts, no tracebacks ------------------------------------------------------
        phase("checks")
        rows = project.ps()
        for service in OURS:
            user = project.inspect(service, "{{.Config.User}}")
            assert user not in ("", "0", "root"), (service, user)
        for service in ("api", "ui", "embedder"):
            assert project.compose("exec", "-T", service, "id", "-u").stdout.strip() == "10001", service
        for service in rows:
            assert project.inspect(service, "{{.RestartCount}}") == "0", service
        logs = project.compose("logs", "--no-color").stdout
        assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000:][:6000]

        sizes = {image: engine.docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()
                 for image in ("imagesearch-runtime", "imagesearch-export")}
        phase("end")
        print(f"\n[compose] first up --build {first_up_s:.0f} s, second up --build {second_up_s:.0f} s, "
              + ", ".join(f"{name} {int(size) / 2**20:.0f} MiB" for name, size in sizes.items())
              + "\n[compose] seconds per phase: "
              + ", ".join(f"{name} {end - start:.0f}" for (name, start), (_, end) in zip(phases, phases[1:], strict=False)))
    except BaseException:
        project.report()  # what each container said, so a failure on CI can be read from its log
        raise
    finally:
        if images is not None:
            images.close()
        project.compose("down", "-v", "--remove-orphans", check=False)
