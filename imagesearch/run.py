"""`make run`: the whole product on one machine, on the embedded default.

1. exports the configured model (``IMAGESEARCH_ARCH`` + ``IMAGESEARCH_PRETRAINED``, a tag or a local
   checkpoint) unless the model repository already has it;
2. ingests ``IMAGESEARCH_URLS_FILE`` (default data/image_urls.txt) and ``IMAGESEARCH_IMAGES_FOLDER``
   (default data/images) when they exist; a re-run only does what is new;
3. serves the API (``IMAGESEARCH_API_PORT``, 8000) and the UI (``IMAGESEARCH_UI_PORT``, 8501) until
   Ctrl-C or SIGTERM, which stops everything it started.

Each step is the ordinary ``imagesearch`` command in a child process, so this file only sequences them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from imagesearch.config import get_settings
from imagesearch.model_card import make_slug

STOP_GRACE_S = 15.0


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imagesearch.cli", *args]


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def _step(args: list[str], env: dict[str, str], what: str) -> int:
    """Run one step to completion; Ctrl-C stops it (and then us)."""
    _say(what)
    child = subprocess.Popen(args, env=env, start_new_session=True)
    try:
        return child.wait()
    except KeyboardInterrupt:
        _stop([child])
        raise


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM, wait, then SIGKILL whatever is still running; last started, first stopped."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in reversed(children):
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_healthy(url: str, api: subprocess.Popen, timeout: float = 300.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and api.poll() is None:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    # Explicit handlers: a shell may start us with SIGINT ignored; `kill` stops us as cleanly as Ctrl-C.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    settings = get_settings()
    slug = settings.model or make_slug(settings.arch, settings.pretrained)
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    env = {**os.environ, "IMAGESEARCH_MODEL": slug, "IMAGESEARCH_API_URL": api_url}
    children: list[subprocess.Popen] = []
    try:
        custom = ["--model-config", str(settings.arch_config)] if settings.arch_config else []
        rc = _step(_command("export", "--if-missing", "--model", settings.arch, "--pretrained", settings.pretrained,
                            "--slug", slug, "--repository", str(settings.model_repository), *custom),
                   env, f"model {slug} in {settings.model_repository}")
        if rc != 0:
            _say("the model export failed (see above). Offline? Point IMAGESEARCH_PRETRAINED at a local "
                 "checkpoint file, or IMAGESEARCH_MODEL at a model already in the repository.")
            return rc

        sources = []
        if settings.urls_file.is_file():
            sources += ["--urls", str(settings.urls_file)]
        if settings.images_folder.is_dir():
            sources += ["--folder", str(settings.images_folder)]
        if sources:
            rc = _step(_command("ingest", *sources), env, f"ingest {' '.join(sources[1::2])} into {settings.data_dir}")
            if rc != 0:
                _say(f"ingest ended with status {rc}; serving what is indexed so far")
        else:
            _say(f"nothing to ingest ({settings.urls_file} and {settings.images_folder} do not exist)")

        children.append(subprocess.Popen(
            _command("serve", "--host", settings.api_host, "--port", str(settings.api_port)), env=env,
            start_new_session=True))
        if not _wait_healthy(f"{api_url}/healthz", children[0]):
            _say(f"the API did not become healthy; see {api_url}/healthz and the log above")
            return 1
        children.append(subprocess.Popen(
            _command("ui", "--host", settings.ui_host, "--port", str(settings.ui_port), "--api-url", api_url),
            env=env, start_new_session=True))
        _say(f"search API: {api_url}/docs   web UI: http://{settings.ui_host}:{settings.ui_port}   (Ctrl-C stops both)")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        _say("a service stopped on its own; stopping the rest")
        return 1
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        _stop(children)


if __name__ == "__main__":
    sys.exit(main())
