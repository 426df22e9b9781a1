"""Helpers for the API, UI and `make run` tests: shape images on disk and on a local HTTP server,
ingest through the real `imagesearch ingest` command, and the API served by uvicorn in a thread."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from imagesearch.config import Settings
from tests.support import shapes
from tests.support.cli import clean_env
from tests.support.net import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Shape:
    colour: str
    shape: str
    data: bytes

    @property
    def caption(self) -> str:
        return shapes.caption(self.colour, self.shape)


def make_shapes(per_class: int, seed: int = 0, classes=None) -> list[Shape]:
    rng = random.Random(seed)
    return [Shape(c, s, shapes.draw_shape(c, s, rng).encode("JPEG"))
            for c, s in (classes or shapes.CLASSES) for _ in range(per_class)]


def write_folder(folder: Path, images: list[Shape]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        (folder / f"{image.colour}_{image.shape}_{i}.jpg").write_bytes(image.data)
    return folder


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see ``settings``."""
    return clean_env(**{
        "IMAGESEARCH_DATA_DIR": str(settings.data_dir),
        "IMAGESEARCH_MODEL_REPOSITORY": str(settings.model_repository),
        "IMAGESEARCH_MODEL": settings.model,
        "IMAGESEARCH_MODELS": settings.models,
        "IMAGESEARCH_ALLOW_PRIVATE_NETWORKS": str(settings.allow_private_networks).lower(),
        "IMAGESEARCH_DECODE_WORKERS": "1",
        "IMAGESEARCH_STORE": settings.store,
        "IMAGESEARCH_ES_URL": settings.es_url,
        "IMAGESEARCH_ES_INDEX_PREFIX": settings.es_index_prefix,
        "IMAGESEARCH_ES_INDEX_TYPE": settings.es_index_type,
    })


def ingest(settings: Settings, *args: str) -> str:
    """Run the real `imagesearch ingest ARGS` for ``settings``; returns its output."""
    done = subprocess.run([sys.executable, "-m", "imagesearch.cli", "ingest", *args], env=settings_env(settings),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class ApiThread:
    """The search API served by uvicorn on a free port, in a thread of the test process."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def __enter__(self) -> ApiThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_for(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> httpx.Response:
    """GET ``url`` until it answers 200 (or the process died / time ran out); returns that answer."""
    answers: list[httpx.Response] = []
    wait_until(lambda: answers.append(httpx.get(url, timeout=5)) or answers[-1].status_code == 200, timeout, url,
               process=process, log_tail=lambda: f"last: HTTP {answers[-1].status_code}" if answers else "")
    return answers[-1]


def stored_images(database: Path, model: str = "shapes-tiny") -> int:
    """How many images a local store holds, read by a store of its own (a running ingest writes it)."""
    from imagesearch.stores.local import LocalStore

    store = LocalStore(database)
    try:
        return store.counts(model).images
    finally:
        store.close()
