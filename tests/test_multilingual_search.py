"""Search in any language: the multilingual test model (an XLM-RoBERTa text tower trained here on shapes
captioned in English, German and Japanese: tests/support/multilingual.py), exported with ``--text-model``,
through the real ingest and API, in the local store, in Elasticsearch and with Triton's encoders; and
beside the English test model in one deployment (``IMAGESEARCH_MODELS``)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from tests.support import shapes
from tests.support.cli import clean_env
from tests.support.multilingual import LANGUAGES, SLUG, caption, ensure_multilingual_model
from tests.support.search_api import ROOT, ApiThread, ingest, make_shapes, settings_env, write_folder
from tests.support.triton_server import TritonServer
from tests.support.triton_twin import make_python_twin

PER_CLASS = 2
RED_CIRCLE = {language: caption("red", "circle", language) for language in LANGUAGES}  # a red circle, ein roter Kreis, 赤い丸


@pytest.fixture(scope="module")
def multilingual_repo() -> Path:
    """A model repository with the trained multilingual model (slug ``shapes-multi``, fp32); cached."""
    return ensure_multilingual_model()


@pytest.fixture(scope="module")
def both_models(tmp_path_factory, test_model_repo, multilingual_repo) -> Path:
    """One repository with the English and the multilingual model, as `imagesearch export` twice makes it."""
    repository = tmp_path_factory.mktemp("both") / "models"
    repository.mkdir()
    for source in (test_model_repo, multilingual_repo):
        for entry in source.iterdir():
            (repository / entry.name).symlink_to(entry)
    return repository


def shape_images(seed: int):
    images = make_shapes(PER_CLASS, seed=seed)
    return images, {hashlib.sha256(image.data).hexdigest(): (image.colour, image.shape) for image in images}


def search(url: str, text: str, model: str | None = None) -> dict:
    params = {"q": text, "k": PER_CLASS} | ({"model": model} if model else {})
    response = httpx.get(f"{url}/search", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def assert_every_language_finds_the_shapes(url: str, classes: dict, model: str | None = None) -> None:
    """Each class named in each language finds its colour first (its shape too, mostly), and only red
    circles come first for "a red circle", "ein roter Kreis" and "赤い丸" alike."""
    for language in LANGUAGES:
        right = 0
        for colour, shape in shapes.CLASSES:
            text = caption(colour, shape, language)
            body = search(url, text, model)
            assert body["model"] == (model or SLUG) and len(body["results"]) == PER_CLASS
            first = classes[body["results"][0]["id"]]
            assert first[0] == colour, (text, first)  # the colour is never wrong
            right += first == (colour, shape)
        assert right >= 0.75 * len(shapes.CLASSES), (language, right)
    for language, text in RED_CIRCLE.items():
        found = [classes[r["id"]] for r in search(url, text, model)["results"]]
        assert found == [("red", "circle")] * PER_CLASS, (language, text, found)


@pytest.mark.parametrize("store", ["local", "elasticsearch"])
def test_a_query_in_english_german_or_japanese_finds_the_same_shapes(request, tmp_path, multilingual_repo, store):
    extra = {}
    if store == "elasticsearch":
        node = request.getfixturevalue("es_node")
        extra = {"es_url": node.url, "es_index_type": "hnsw", "es_index_prefix": f"m{uuid.uuid4().hex[:10]}"}
    settings = Settings(data_dir=tmp_path / "var", model_repository=multilingual_repo, model=SLUG, store=store, **extra)
    images, classes = shape_images(seed=5)
    ingest(settings, "--folder", str(write_folder(tmp_path / "images", images)))
    with ApiThread(create_app(settings)) as api:
        status = httpx.get(f"{api.url}/status", timeout=30).json()
        assert status["counts"]["embedded"] == len(images), status
        assert_every_language_finds_the_shapes(api.url, classes)
        # the same image found by example, whatever language the collection was searched in
        example = httpx.post(f"{api.url}/search", json={"image_id": next(iter(classes)), "k": 1}, timeout=30).json()
        assert example["results"][0]["id"] == next(iter(classes))


@pytest.fixture(scope="module")
def triton_both(tmp_path_factory, both_models):
    """A real tritonserver serving both models' Python-backend twins."""
    workdir = tmp_path_factory.mktemp("triton-multi")
    server = TritonServer(make_python_twin(both_models, workdir / "model_repository"), workdir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.server
def test_both_models_side_by_side_through_triton(tmp_path, both_models, triton_both):
    """Ingest and search with Triton's encoders: each image embedded with both models, each query
    answered by the model it names (the English one by default)."""
    settings = Settings(data_dir=tmp_path / "var", model_repository=both_models, models=f"shapes-tiny,{SLUG}",
                        encoder="triton", triton_url=triton_both.grpc_url)
    images, classes = shape_images(seed=8)
    env = settings_env(settings) | {"IMAGESEARCH_ENCODER": "triton", "IMAGESEARCH_TRITON_URL": triton_both.grpc_url}
    done = subprocess.run(
        [sys.executable, "-m", "imagesearch.cli", "ingest", "--folder", str(write_folder(tmp_path / "images", images))],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with ApiThread(create_app(settings)) as api:
        status = httpx.get(f"{api.url}/status", timeout=30).json()
        assert [(m["slug"], m["counts"]["embedded"]) for m in status["models"]] == [
            ("shapes-tiny", len(images)),
            (SLUG, len(images)),
        ]
        assert_every_language_finds_the_shapes(api.url, classes, model=SLUG)
        english = search(api.url, "a red circle")
        assert english["model"] == "shapes-tiny" and classes[english["results"][0]["id"]] == ("red", "circle")
    for model in ("shapes-tiny", SLUG):  # the images and the queries went through Triton
        for tower in ("visual", "textual"):
            assert triton_both.inference_stats(f"{model}_{tower}")["inference_stats"]["success"]["count"] > 0, (model, tower)


def test_an_english_and_a_multilingual_model_side_by_side(tmp_path, both_models):
    """IMAGESEARCH_MODELS=shapes-tiny,shapes-multi: the multilingual model added to a collection embeds
    only what it lacks, and one API serves both: English by default, any of the three languages by name."""
    english = Settings(data_dir=tmp_path / "var", model_repository=both_models, model="shapes-tiny")
    images, classes = shape_images(seed=6)
    ingest(english, "--folder", str(write_folder(tmp_path / "images", images)))
    both = english.model_copy(update={"models": f"shapes-tiny,{SLUG}"})
    env = clean_env(IMAGESEARCH_DATA_DIR=str(both.data_dir), IMAGESEARCH_MODEL_REPOSITORY=str(both_models),
                    IMAGESEARCH_MODELS=both.models)
    added = subprocess.run([sys.executable, "-m", "imagesearch.cli", "ingest", "embed"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "embed shapes-tiny: 0 embedded" in added.stdout and f"embed {SLUG}: {len(images)} embedded" in added.stdout
    with ApiThread(create_app(both)) as api:
        health = httpx.get(f"{api.url}/healthz", timeout=30).json()
        assert health["ok"] and set(health["models"]) == {"shapes-tiny", SLUG} and health["model"] == "shapes-tiny"
        default = search(api.url, "a red circle")
        assert default["model"] == "shapes-tiny" and classes[default["results"][0]["id"]] == ("red", "circle")
        assert_every_language_finds_the_shapes(api.url, classes, model=SLUG)
        posted = httpx.post(f"{api.url}/search", json={"text": "赤い丸", "k": PER_CLASS, "model": SLUG}, timeout=30).json()
        assert [classes[r["id"]] for r in posted["results"]] == [("red", "circle")] * PER_CLASS
