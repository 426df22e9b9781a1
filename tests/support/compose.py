"""The compose files as Docker Compose itself reads them: ``docker compose config`` (the real Compose
v2 binary the compose test builds, tests/support/docker_engine.py; it needs no engine) interpolates
the .env file, merges the override files and checks each file against the Compose Specification.
The readers below take its normalized output (long-form ports and volumes, argv lists).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

from tests.support.docker_engine import ensure_compose

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CPU_OVERRIDE = REPO_ROOT / "docker-compose.cpu.yml"
BLIP2_OVERRIDE = REPO_ROOT / "docker-compose.blip2.yml"
MULTILINGUAL_OVERRIDE = REPO_ROOT / "docker-compose.multilingual.yml"
RAY_OVERRIDE = REPO_ROOT / "docker-compose.ray.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
# In CI the repository is a fresh clone with shared/ beside it.
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"


class ComposeError(ValueError):
    """`docker compose config` refused the files (its message: a missing variable, a schema error)."""


def load_yaml(path: Path) -> dict:
    """One file as written, before interpolation (for checks of the raw text, e.g. secrets)."""
    return yaml.safe_load(Path(path).read_text())


def load_env(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(path).items()}


def compose_config(files: list[Path], env: dict[str, str], *extra: str) -> str:
    """``docker compose -f A -f B ... config`` with ``env`` as the .env file and no other variables."""
    with tempfile.TemporaryDirectory() as home:
        env_file = Path(home) / ".env"
        assert not any("'" in v for v in env.values()), "single-quoted .env values are taken as written"
        env_file.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
        argv = [str(ensure_compose())]
        for path in files:
            argv += ["-f", str(path)]
        done = subprocess.run([*argv, "--project-directory", str(REPO_ROOT), "--env-file", str(env_file),
                               "config", *extra], capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home})
    if done.returncode != 0:
        raise ComposeError(done.stderr.strip())
    return done.stdout


@functools.lru_cache(maxsize=32)
def _load(files: tuple[Path, ...], env: tuple[tuple[str, str], ...]) -> dict:
    return json.loads(compose_config(list(files), dict(env), "--format", "json"))


def load_project(files: list[Path] | None = None, env: dict[str, str] | None = None) -> dict:
    """The effective configuration of ``docker compose -f A -f B ...`` with ``env`` as the .env file."""
    env = load_env() if env is None else env
    return copy.deepcopy(_load(tuple(files or [COMPOSE_FILE]), tuple(sorted(env.items()))))


def variables(files: list[Path], env: dict[str, str] | None = None) -> dict[str, dict]:
    """The variables the files use: name -> {"DefaultValue", "Required", ...}, as Compose lists them."""
    return json.loads(compose_config(files, load_env() if env is None else env, "--variables", "--format", "json"))


def load_schema() -> dict:
    return json.loads(SCHEMA.read_text())


# -- small readers of the service definitions ----------------------------------------------------

def command_argv(service: dict) -> list[str]:
    return [str(part) for part in service.get("command") or []]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: dict) -> list[tuple[str, str, int]]:
    """(host ip, host port, container port) of each port mapping."""
    return [(p.get("host_ip", ""), str(p.get("published", "")), int(p["target"])) for p in service.get("ports", [])]


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume; a bind's source relative to the project folder ("./data")."""
    result = []
    for volume in service.get("volumes", []):
        source = volume["source"]
        if volume["type"] == "bind":
            source = "./" + os.path.relpath(source, REPO_ROOT)
        result.append((source, volume["target"], bool(volume.get("read_only", False))))
    return result


def healthcheck_argv(service: dict) -> list[str] | None:
    """The healthcheck as argv ("CMD-SHELL x" runs as `sh -c x`, as Docker does). `config` keeps the
    file's ``$$`` escapes; the engine turns them into ``$``."""
    test = (service.get("healthcheck") or {}).get("test")
    if not test or test == ["NONE"]:
        return None
    test = [part.replace("$$", "$") for part in test]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return test[1:]


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of ``http://host:port`` or ``host:port``."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    return parts.hostname or "", parts.port or default_port
