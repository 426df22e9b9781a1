"""A real Docker engine and Docker Compose v2 for the compose test, and the stand-ins of the
third-party images the compose file names.

- The engine is Debian's ``docker.io`` (installed when missing; we are root on the test machines).
  ``dockerd`` runs only for the test, on a private socket; its data root lives in the test cache, so
  built images and BuildKit's cache survive between runs. ``stop()`` leaves no daemon, bridge or
  firewall chain behind.
- Compose v2 (``docker compose``; Debian's docker-compose is v1, which knows no ``!reset``) is built
  once from its Go module with this machine's Go and cached; the test's ``DOCKER_CONFIG`` holds it
  as a CLI plugin, so the user's ~/.docker is never touched.
- No container registry is reachable, so the images the compose file pulls are built locally under
  the same names and tags, as stand-ins (``tests/docker_standins/``): a debootstrap'ed Debian
  bookworm with Python for ``python:3.11.13-slim-bookworm``, and on it Elastic's test distribution
  and the pytriton ``tritonserver``. Nothing in the product's Dockerfiles or compose files suits them.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.es_node import cache_dir, ensure_distribution, java_home
from tests.support.net import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
STANDINS = REPO_ROOT / "tests" / "docker_standins"
COMPOSE_VERSION = "v2.40.3"
COMPOSE_MODULE = "github.com/docker/compose/v2"
PYTHON_BASE = "python:3.11.13-slim-bookworm"
# The official slim image's packages beyond Debian's minimal base: Python 3.11 with pip, CA
# certificates, netbase, tzdata. The version string changes the stand-in when the recipe changes.
PYTHON_BASE_PACKAGES = "python3,python3-pip,python3-venv,ca-certificates,netbase,tzdata"
PYTHON_BASE_RECIPE = f"bookworm minbase {PYTHON_BASE_PACKAGES} v1"
DATA_ROOT = cache_dir() / "docker" / "data-root"  # the engine's images and build cache, kept between runs
# Each run rebuilds our images (the source changed), leaving the last ones untagged; without a prune
# the data root grew by GBs a run (55 GB after a day of runs) until a build hit "no space left".
BUILD_CACHE_KEEP = "8GB"  # enough for the torch layer and the pip cache mounts, so a rerun stays warm
FREE_SPACE_NEEDED_GB = 12  # a cold build: the export image (CUDA torch) is about 6.5 GB, plus its unpacking
# The machine's CA bundle: where a TLS-intercepting proxy's CA is, pip inside builds needs it.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _apt_install(*packages: str) -> None:
    _run(["apt-get", "update", "-qq"], timeout=600)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], timeout=1200,
         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_packages() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the compose test runs a Docker engine, which needs root")
    missing = [package for command, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap"),
                                                ("iptables", "iptables")) if shutil.which(command) is None]
    if missing:
        _apt_install(*missing)


def ensure_compose() -> Path:
    """Docker Compose v2, built from its Go module on first use (about 3 to 5 minutes on 2 cores)."""
    binary = cache_dir() / "docker" / f"docker-compose-{COMPOSE_VERSION}"
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("building Docker Compose v2 needs Go (https://go.dev/dl/)")
    module = json.loads(_run([go, "mod", "download", "-json", f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"], timeout=900,
                             cwd=tempfile.gettempdir()).stdout)
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    # `go install module@version` refuses this module (its go.mod has exclude lines): build in its folder.
    _run([go, "build", "-trimpath", "-ldflags", f"-s -w -X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}",
          "-o", str(partial), "./cmd"], timeout=1800, cwd=module["Dir"], env={**os.environ, "GOFLAGS": "-mod=mod"})
    partial.rename(binary)
    return binary


class DockerEngine:
    """``dockerd`` on a private socket, for the length of a test session."""

    def __init__(self, workdir: Path):
        ensure_packages()
        self.workdir = Path(workdir)
        self.data_root = DATA_ROOT
        self.exec_root = Path(tempfile.mkdtemp(prefix="dockerd-exec-"))  # short: it holds unix sockets
        self.socket = self.exec_root / "docker.sock"
        self.config = self.workdir / "docker-config"  # DOCKER_CONFIG: the compose plugin, no user settings
        (self.config / "cli-plugins").mkdir(parents=True, exist_ok=True)
        os.symlink(ensure_compose(), self.config / "cli-plugins" / "docker-compose")
        self.log_path = self.workdir / "dockerd.log"
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.config),
                "DOCKER_BUILDKIT": "1", "COMPOSE_STATUS_STDOUT": "1"}

    def start(self) -> DockerEngine:
        _stop_stale_daemons()  # a test process killed before its teardown leaves its daemon running
        self.data_root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--storage-driver=overlay2", f"--data-root={self.data_root}", f"--exec-root={self.exec_root}",
                 f"--pidfile={self.exec_root / 'dockerd.pid'}", f"--host=unix://{self.socket}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)  # no daemon left behind when the test process ends early
        wait_until(lambda: self.docker("version", check=False, timeout=10).returncode == 0, 120, "dockerd",
                   process=self.process, log_tail=lambda: self.log_path.read_text(errors="replace")[-3000:])
        self.reclaim_space()
        self.require_free_space()
        return self

    def reclaim_space(self) -> None:
        """Drop untagged images (an earlier run's builds) and trim BuildKit's cache to a cap."""
        self.docker("image", "prune", "--force", timeout=900)
        # The API's own prune: with DOCKER_BUILDKIT=1 the CLI would hand `builder prune` to buildx (absent).
        self.docker("builder", "prune", "--force", f"--keep-storage={BUILD_CACHE_KEEP}", timeout=900,
                    env_override={"DOCKER_BUILDKIT": "0"})

    def require_free_space(self) -> None:
        free_gb = shutil.disk_usage(self.data_root).free / 1e9
        if free_gb < FREE_SPACE_NEEDED_GB:
            raise RuntimeError(f"the compose test builds images of several GB; {self.data_root} has {free_gb:.1f} GB "
                               f"free, it needs {FREE_SPACE_NEEDED_GB} GB (free some disk, or point "
                               f"IMAGESEARCH_TEST_CACHE at a bigger one)")

    def docker(self, *args: str, check: bool = True, timeout: float = 600, env_override: dict | None = None,
               **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env_override or {})}, **kwargs)
        if check and done.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def image_label(self, image: str, label: str) -> str | None:
        done = self.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image, check=False)
        return (json.loads(done.stdout or "null") or {}).get(label) if done.returncode == 0 else None

    def stop(self) -> None:
        """Stop the daemon (its containers with it) and remove what it added to the host network."""
        if self.process is not None and self.process.poll() is None:
            self.docker("image", "prune", "--force", check=False, timeout=900)  # this run's superseded builds
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _clean_host()
        shutil.rmtree(self.exec_root, ignore_errors=True)


def _our_daemons() -> list[int]:
    """dockerd processes on the test cache's data root (a system Docker service is not ours)."""
    out = subprocess.run(["pgrep", "-f", f"dockerd .*--data-root={DATA_ROOT}"], capture_output=True, text=True,
                         timeout=30).stdout
    return [int(pid) for pid in out.split()]


def _stop_stale_daemons() -> None:
    stale = _our_daemons()
    if not stale:
        return
    for pid in stale:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _our_daemons() and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _our_daemons():
        os.kill(pid, signal.SIGKILL)
    _clean_host()


def _clean_host() -> None:
    """Remove what dockerd adds to the host network: bridges, veths, DOCKER* firewall chains."""
    for link in _docker_links():
        subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=30)
    for table in ("filter", "nat"):
        _delete_docker_chains(table)


def _docker_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n == "docker0" or n.startswith("br-") or n.startswith("veth")]


def _delete_docker_chains(table: str) -> None:
    """Remove the DOCKER* chains and the jumps to them that dockerd leaves behind."""
    rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, timeout=30).stdout
    for rule in rules.splitlines():
        parts = rule.split()
        if parts[:1] == ["-A"] and "DOCKER" in rule and not parts[1].startswith("DOCKER"):
            subprocess.run(["iptables", "-t", table, "-D", *parts[1:]], capture_output=True, timeout=30)
    chains = [line.split()[1] for line in rules.splitlines() if line.startswith("-N DOCKER")]
    for chain in chains:
        subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, timeout=30)
    for chain in chains:
        subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, timeout=30)


def host_leftovers() -> list[str]:
    """What a Docker engine would leave on the host: a daemon, links, firewall chains."""
    left = [f"link {name}" for name in _docker_links()]
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, timeout=30).stdout
        left += [f"{table}: {line}" for line in rules.splitlines() if "DOCKER" in line]
    return left + [f"dockerd pid {pid}" for pid in _our_daemons()]


def build_python_base(engine: DockerEngine) -> None:
    """``python:3.11.13-slim-bookworm``: Debian bookworm (debootstrap) with Python 3.11 and pip as
    the official image has them: ``python``/``pip`` in /usr/local/bin, no "externally managed" lock."""
    if engine.image_label(PYTHON_BASE, "org.imagesearch.standin") == PYTHON_BASE_RECIPE:
        return
    with tempfile.TemporaryDirectory(dir=engine.workdir) as tmp:
        root = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={PYTHON_BASE_PACKAGES}", "bookworm", str(root),
              "http://deb.debian.org/debian"], timeout=1800)
        (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        for name, target in (("python", "python3"), ("python3", "python3"), ("pip", "pip3"), ("pip3", "pip3")):
            (root / "usr/local/bin" / name).symlink_to(f"/usr/bin/{target}")
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        engine.docker("import", "--change", "ENV LANG=C.UTF-8",
                      "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                      "--change", f"LABEL org.imagesearch.standin=\"{PYTHON_BASE_RECIPE}\"",
                      "--change", 'CMD ["python3"]', "-", PYTHON_BASE, stdin=tar.stdout, timeout=900)
        tar.wait()


def build_standins(engine: DockerEngine) -> None:
    """The three third-party images, built locally under the names the compose file uses."""
    build_python_base(engine)
    with tempfile.TemporaryDirectory(dir=engine.workdir) as tmp:
        es_context = Path(tmp) / "elasticsearch"
        shutil.copytree(STANDINS / "elasticsearch", es_context)
        # Hard links: the distribution and the JDK are hundreds of MB.
        shutil.copytree(ensure_distribution(), es_context / "elasticsearch", copy_function=_link_or_copy)
        shutil.copytree(java_home(), es_context / "jdk", copy_function=_link_or_copy, symlinks=True)
        triton_context = Path(tmp) / "tritonserver"
        shutil.copytree(STANDINS / "tritonserver", triton_context)
        standin = triton_context / "standin"
        (standin / "imagesearch").mkdir(parents=True)
        (standin / "imagesearch" / "__init__.py").write_text("")
        shutil.copy2(REPO_ROOT / "imagesearch" / "model_card.py", standin / "imagesearch" / "model_card.py")
        for name in ("triton_twin.py", "triton_onnx_model.py"):
            shutil.copy2(REPO_ROOT / "tests" / "support" / name, standin / name)
        env = {**engine.env, "ES_STANDIN_CONTEXT": str(es_context), "TRITON_STANDIN_CONTEXT": str(triton_context),
               "BUILD_CA_BUNDLE": str(CA_BUNDLE) if CA_BUNDLE.exists() else ""}
        done = subprocess.run(["docker", "compose", "-f", str(STANDINS / "compose.yml"), "build"],
                              capture_output=True, text=True, timeout=1800, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"building the stand-ins failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def wait_for_healthy(engine: DockerEngine, compose: list[str], services: list[str], timeout: float) -> dict:
    """Poll ``docker compose ps`` until each service is healthy; the last ``ps`` rows by service."""
    deadline = time.monotonic() + timeout
    while True:
        rows = compose_ps(engine, compose)
        states = {s: (rows.get(s) or {}).get("Health") or (rows.get(s) or {}).get("State") for s in services}
        if all(state == "healthy" for state in states.values()):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"not healthy after {timeout:.0f} s: {states}")
        time.sleep(2)


def compose_ps(engine: DockerEngine, compose: list[str]) -> dict[str, dict]:
    out = engine.docker(*compose, "ps", "--all", "--format", "json").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    if len(rows) == 1 and isinstance(rows[0], list):
        rows = rows[0]
    return {row["Service"]: row for row in rows}
