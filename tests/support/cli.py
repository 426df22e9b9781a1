"""Run the real `imagesearch` command with IMAGESEARCH_* settings from an environment: in this process
(``run_cli``: the same entry, without an interpreter start-up and its imports per call), or as a
process of its own (``start_cli``: for what only a process shows, such as signals and kills)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import traceback
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


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``imagesearch ARGS`` through its entry point in this process, with ``env``'s IMAGESEARCH_*
    settings (and no others); what it prints and its exit status, as a process would give them."""
    from imagesearch.cli import main
    from imagesearch.config import get_settings

    saved_env = {k: v for k, v in os.environ.items() if k.startswith("IMAGESEARCH_")}
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    out, err = io.StringIO(), io.StringIO()
    for key in saved_env:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("IMAGESEARCH_")})
    root.handlers = []  # the command's logging.basicConfig writes to this call's stderr
    get_settings.cache_clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
            except Exception:  # as the interpreter would end: the traceback on stderr, status 1
                traceback.print_exc()
                code = 1
    finally:
        for key in [k for k in os.environ if k.startswith("IMAGESEARCH_")]:
            del os.environ[key]
        os.environ.update(saved_env)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        root.handlers, level = saved_logging
        root.setLevel(level)
        get_settings.cache_clear()
    return subprocess.CompletedProcess(command(*args), code, out.getvalue(), err.getvalue())


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
