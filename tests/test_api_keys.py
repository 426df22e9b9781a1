"""API keys against the running API: every route with no key, a wrong key, a read key and an admin
key (as a bearer token and as X-API-Key, plain and from a file of hashes); probes stay open; no key
is ever echoed or logged."""

from __future__ import annotations

import hashlib
import io
import logging

import httpx
import pytest

from imagesearch.api.app import create_app
from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder

READ, ADMIN, FILED = "read-key-5f1c", "admin-key-93ab", "filed-key-77d0"


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory, test_model_repo):
    from imagesearch.config import Settings

    root = tmp_path_factory.mktemp("keys")
    (root / "keys.txt").write_text(f"# hashed keys\nread {hashlib.sha256(FILED.encode()).hexdigest()}\n")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny",
                        api_keys=f"{READ}, another-read-key", admin_api_keys=ADMIN, api_keys_file=root / "keys.txt")
    images = make_shapes(1, seed=91)
    ingest(settings, "--folder", str(write_folder(root / "photos", images)))
    with ApiThread(create_app(settings)) as api:
        yield api.url, hashlib.sha256(images[0].data).hexdigest(), images[0].data


def requests(image_id: str, data: bytes) -> dict[str, tuple[str, str, dict]]:
    return {
        "GET /search": ("GET", "/search", {"params": {"q": "a red circle"}}),
        "POST /search": ("POST", "/search", {"json": {"text": "a red circle"}}),
        "POST /search/image": ("POST", "/search/image", {"files": {"file": ("x.jpg", io.BytesIO(data), "image/jpeg")}}),
        "GET /images/{id}": ("GET", f"/images/{image_id}", {}),
        "GET /status": ("GET", "/status", {}),
    }


@pytest.mark.parametrize("route", ["GET /search", "POST /search", "POST /search/image", "GET /images/{id}", "GET /status"])
def test_every_route_needs_a_valid_key(keyed_api, route, caplog):
    url, image_id, data = keyed_api
    method, path, kwargs = requests(image_id, data)[route]
    caplog.set_level(logging.DEBUG)

    def send(**headers: str) -> httpx.Response:
        if "files" in kwargs:  # a fresh upload stream per request
            kwargs["files"] = {"file": ("x.jpg", io.BytesIO(data), "image/jpeg")}
        return httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)

    none = send()
    assert none.status_code == 401 and none.json()["error"] == "unauthorized"
    assert none.headers["WWW-Authenticate"] == "Bearer" and "X-API-Key" in none.json()["detail"]
    wrong = send(Authorization="Bearer not-a-key")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "the API key is not valid"
    assert send(**{"X-API-Key": READ[:-1]}).status_code == 401  # a prefix of a key is no key
    for headers in ({"Authorization": f"Bearer {READ}"}, {"X-API-Key": READ}, {"X-API-Key": "another-read-key"},
                    {"Authorization": f"Bearer {FILED}"}, {"Authorization": f"Bearer {ADMIN}"}, {"X-API-Key": ADMIN}):
        answer = send(**headers)
        assert answer.status_code == 200, (headers, answer.text)
    texts = caplog.text + none.text + wrong.text
    assert not any(key in texts for key in (READ, ADMIN, FILED, "not-a-key"))


def test_probes_and_the_schema_stay_open_and_the_schema_declares_the_keys(keyed_api):
    url, _, _ = keyed_api
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{url}/metrics", timeout=30).status_code == 200
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert "401" in schema["paths"]["/search"]["get"]["responses"]
    assert schema["paths"]["/search"]["get"]["security"] and "security" not in schema["paths"]["/healthz"]["get"]


def test_a_bad_key_file_stops_the_start_with_its_line(tmp_path, settings):
    (tmp_path / "keys.txt").write_text("read 1234\n")
    with pytest.raises(ValueError, match=r"keys.txt:1: expected '<read\|admin> <sha256 hex of the key>'"):
        create_app(settings.model_copy(update={"api_keys_file": tmp_path / "keys.txt"}))


def test_removing_an_image_needs_an_admin_key_and_takes_it_out_of_every_answer(keyed_api):
    url, kept, _ = keyed_api  # ``kept`` is the image the other tests read
    found = httpx.get(f"{url}/search", params={"q": "a red circle", "k": 12}, headers={"X-API-Key": READ}, timeout=30)
    victim = next(r["id"] for r in found.json()["results"] if r["id"] != kept)
    assert httpx.delete(f"{url}/images/{victim}", timeout=30).status_code == 401
    forbidden = httpx.delete(f"{url}/images/{victim}", headers={"X-API-Key": READ}, timeout=30)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
    assert httpx.delete(f"{url}/images/{'x' * 64}", headers={"X-API-Key": ADMIN}, timeout=30).json()["error"] == "invalid_id"

    done = httpx.delete(f"{url}/images/{victim}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert done.status_code == 200 and done.json() == {"removed": victim, "records": 1, "files": 1}
    again = httpx.get(f"{url}/search", params={"q": "a red circle", "k": 12}, headers={"X-API-Key": READ}, timeout=30)
    assert victim not in {r["id"] for r in again.json()["results"]} and len(again.json()["results"]) == 11
    assert httpx.get(f"{url}/images/{victim}", headers={"X-API-Key": READ}, timeout=30).status_code == 404
    more = httpx.post(f"{url}/search", json={"image_id": victim}, headers={"X-API-Key": READ}, timeout=30)
    assert more.status_code == 404
    assert httpx.delete(f"{url}/images/{victim}", headers={"X-API-Key": ADMIN}, timeout=30).status_code == 404
