"""Promises of the API that no other test held it to: a decompression bomb uploaded, an image_url
fetched once (never retried), an image_url on a special-purpose address, and a model that fails its
reference check served with IMAGESEARCH_REFERENCE_CHECK=warn (shown in /healthz)."""

from __future__ import annotations

import contextlib
import io
import shutil

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.stores import make_store
from tests.support.image_server import Reply
from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder
from tests.support.test_model import EMBED_DIM


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_uploaded_decompression_bomb_is_refused_with_too_many_pixels(settings):
    bomb = png(3000, 3000)  # 9 Mpx in a few KB
    assert len(bomb) < 100_000
    with ApiThread(create_app(settings.model_copy(update={"max_image_pixels": 4_000_000}))) as api:
        answer = httpx.post(f"{api.url}/search/image", files={"file": ("bomb.png", bomb, "image/png")}, timeout=60)
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == "too_many_pixels" and "3000x3000" in answer.json()["detail"]
        small = httpx.post(f"{api.url}/search/image", files={"file": ("ok.png", png(64, 64), "image/png")}, timeout=60)
        assert small.status_code != 413 and small.json().get("error") != "too_many_pixels", small.text


def test_an_image_url_is_fetched_once_and_its_failure_answered(settings, image_server):
    """The downloader retries a 5xx; the API does not (a user waits on it): a server that fails once,
    then would succeed, gives the failure, after exactly one request."""
    image = make_shapes(1, seed=9, classes=[("red", "circle")])[0].data
    url = image_server.add_sequence("/flaky.jpg", [Reply(503, b"busy", "text/plain"), Reply(200, image)])
    settings = settings.model_copy(update={"download_retries": 3, "download_backoff_s": 0.01})  # retries for ingest
    with contextlib.closing(make_store(settings)) as store:
        store.ensure_model("shapes-tiny", EMBED_DIM)  # an empty collection: a fetched image gets an empty answer
    with ApiThread(create_app(settings)) as api:
        answer = httpx.post(f"{api.url}/search", json={"image_url": url, "k": 3}, timeout=60)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "http_status" and "503" in answer.json()["detail"]
        assert image_server.hits["/flaky.jpg"] == 1
        again = httpx.post(f"{api.url}/search", json={"image_url": url, "k": 3}, timeout=60)  # the server is fine now
        assert again.status_code == 200 and again.json()["results"] == [], again.text
    assert image_server.hits["/flaky.jpg"] == 2


@pytest.mark.parametrize("host", ["[2002:7f00:1::]", "[fec0::1]", "0177.0.0.1", "[64:ff9b::a9fe:a9fe]"])
def test_an_image_url_on_a_special_purpose_address_is_blocked(settings, image_server, host):
    url = image_server.add("/red.jpg", make_shapes(1, seed=9)[0].data).replace("127.0.0.1", host)
    with ApiThread(create_app(settings.model_copy(update={"allow_private_networks": False}))) as api:
        answer = httpx.post(f"{api.url}/search", json={"image_url": url, "k": 3}, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"] == "blocked", answer.text
    assert image_server.hits["/red.jpg"] == 0


def _break_visual_weights(repository) -> None:
    """Reverse the fp32 image tower's weight matrices: the file loads and runs, its vectors are wrong."""
    path = repository / "shapes-tiny_visual" / "1" / "model.onnx"
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.ndim == 2 and min(values.shape) > 1:
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values[::-1, ::-1]), tensor.name))
    onnx.save(model, str(path))


def test_a_model_failing_its_reference_check_is_served_with_warn_and_healthz_says_so(test_model_repo, tmp_path, monkeypatch):
    repository = shutil.copytree(test_model_repo, tmp_path / "models")
    _break_visual_weights(repository)
    settings = Settings(data_dir=tmp_path / "var", model_repository=repository, model="shapes-tiny")
    ingest(settings.model_copy(update={"model_repository": test_model_repo}),
           "--folder", str(write_folder(tmp_path / "photos", make_shapes(1, seed=2))))

    with ApiThread(create_app(settings)) as api:  # the default policy: refused, and /healthz says why
        refused = httpx.get(f"{api.url}/healthz", timeout=30)
    assert (
        refused.status_code == 503 and "does not reproduce its export's reference outputs" in refused.json()["encoder"]["error"]
    )

    monkeypatch.setenv("IMAGESEARCH_REFERENCE_CHECK", "warn")
    warned = Settings(data_dir=tmp_path / "var", model_repository=repository, model="shapes-tiny")
    assert warned.reference_check == "warn"
    with ApiThread(create_app(warned)) as api:
        health = httpx.get(f"{api.url}/healthz", timeout=30)
        searched = httpx.get(f"{api.url}/search", params={"q": "a red circle", "k": 3}, timeout=30)
    assert health.status_code == 200, health.text  # served anyway, as asked
    check = health.json()["encoder"]["reference_check"]
    assert check["ok"] is False and check["checked"] is True, check
    assert check["worst_cosine"]["visual"] < check["minimum"] <= check["worst_cosine"]["textual"], check
    assert searched.status_code == 200 and len(searched.json()["results"]) == 3
