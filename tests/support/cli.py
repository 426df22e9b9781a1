"""Run the real `imagesearch` command in a subprocess, with IMAGESEARCH_* settings in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one without any IMAGESEARCH_ setting of the
    developer's (a child sees only what its test sets), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("IMAGESEARCH_")}, **extra}


def cli_env(data_dir: Path, model_repository: Path, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(IMAGESEARCH_DATA_DIR=str(data_dir), IMAGESEARCH_MODEL_REPOSITORY=str(model_repository),
               IMAGESEARCH_MODEL="shapes-tiny", IMAGESEARCH_ALLOW_PRIVATE_NETWORKS="true",
               PYTHONPATH=str(REPO), **extra)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imagesearch.cli", *args]


def run_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
