"""Read docker-compose files as `docker compose` does, for the keys this project uses.

No Docker engine here, so the tests load the files themselves: YAML (anchors and merge keys),
variable interpolation from an env file (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ...),
and the merge of an override file (mappings merged key by key, ``command``/``entrypoint``/
``test`` replaced, other sequences appended, ``!reset`` removing a key) -- the Compose
Specification's rules, see https://github.com/compose-spec/compose-spec/blob/main/13-merge.md.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CPU_OVERRIDE = REPO_ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
# In CI the repository is a fresh clone with shared/ beside it.
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[_A-Za-z][_A-Za-z0-9]*)"
    r"|(?P<invalid>))"
)
REPLACED_SEQUENCES = {"command", "entrypoint", "test"}


class InterpolationError(ValueError):
    pass


class ResetList(list):
    """A sequence tagged ``!reset``: the override removes the key."""


class ResetDict(dict):
    """A mapping tagged ``!reset``: the override removes the key."""


class _Loader(yaml.SafeLoader):
    pass


def _reset(loader: yaml.SafeLoader, node: yaml.Node):
    if isinstance(node, yaml.SequenceNode):
        return ResetList(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return ResetDict(loader.construct_mapping(node, deep=True))
    raise yaml.constructor.ConstructorError(None, None, "!reset is supported on sequences and mappings", node.start_mark)


_Loader.add_constructor("!reset", _reset)


def load_yaml(path: Path) -> dict:
    return yaml.load(Path(path).read_text(), Loader=_Loader)


def load_env(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(path).items()}


def variables(path: Path) -> dict[str, set[tuple[str, str]]]:
    """Variables a compose file refers to: name -> {(operator, argument)}, ('', '') when plain."""
    found: dict[str, set[tuple[str, str]]] = {}
    for match in _VARIABLE.finditer(Path(path).read_text()):
        name = match["braced"] or match["named"]
        if name:
            found.setdefault(name, set()).add((match["op"] or "", match["arg"] or ""))
    return found


def interpolate_text(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise InterpolationError(f"invalid interpolation in {text!r}")
        name = match["braced"] or match["named"]
        value, op, arg = env.get(name), match["op"], match["arg"] or ""
        unset_or_empty = not value
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else value is None) else value
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":+", "+"):
            return arg if not (unset_or_empty if op == ":+" else value is None) else ""
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate(node, env: dict[str, str]):
    """Interpolate every string value (not keys), keeping ``!reset`` markers."""
    if isinstance(node, dict):
        return type(node)({k: interpolate(v, env) for k, v in node.items()})
    if isinstance(node, list):
        return type(node)(interpolate(v, env) for v in node)
    if isinstance(node, str):
        return interpolate_text(node, env)
    return node


def merge(base, override, key: str = ""):
    if isinstance(base, dict) and isinstance(override, dict) and not isinstance(override, ResetDict):
        merged = dict(base)
        for k, value in override.items():
            if isinstance(value, (ResetList, ResetDict)):
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge(merged[k], value, k)
            else:
                merged[k] = value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in REPLACED_SEQUENCES:
        return base + [item for item in override if item not in base]
    return override


def load_project(files: list[Path] | None = None, env: dict[str, str] | None = None) -> dict:
    """The effective configuration of ``docker compose -f A -f B ...`` with ``env`` as the .env file."""
    env = load_env() if env is None else env
    project: dict = {}
    for path in files or [COMPOSE_FILE]:
        project = merge(project, interpolate(load_yaml(path), env))
    return project


def load_schema() -> dict:
    return json.loads(SCHEMA.read_text())


# -- small readers of the service definitions ----------------------------------------------------

def command_argv(service: dict) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: dict) -> list[tuple[str, str, int]]:
    """(host ip, host port, container port) of each short-syntax port mapping."""
    result = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        container = int(parts[-1].split("/")[0])
        host_ip, host_port = (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else "")
        result.append((host_ip, host_port, container))
    return result


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each short-syntax volume."""
    result = []
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        result.append((source, target, "ro" in (mode[0].split(",") if mode else [])))
    return result


def healthcheck_argv(service: dict) -> list[str] | None:
    """The healthcheck as argv ("CMD-SHELL x" runs as `sh -c x`, as Docker does)."""
    test = (service.get("healthcheck") or {}).get("test")
    if not test or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return list(test[1:])


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of ``http://host:port`` or ``host:port``."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    return parts.hostname or "", parts.port or default_port
