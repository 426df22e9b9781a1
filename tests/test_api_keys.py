"""API keys against the running API: every route with no key, a wrong key, a read key and an admin
key (as a bearer token and as X-API-Key, plain and from a file of hashes); every route in the
application's route table, those added later too, refuses a request without a key but the probes;
the docs need a key unless opened; no key is ever echoed or logged."""

from __future__ import annotations

import hashlib
import io
import logging
import re

import fastapi.routing
import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route

from imagesearch.api.app import create_app
from imagesearch.api.auth import OPEN_PATHS as OPEN
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
        "GET /images/{id}/thumbnail": ("GET", f"/images/{image_id}/thumbnail", {}),
        "GET /status": ("GET", "/status", {}),
    }


@pytest.mark.parametrize("route", ["GET /search", "POST /search", "POST /search/image", "GET /images/{id}",
                                   "GET /images/{id}/thumbnail", "GET /status"])
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


def test_probes_stay_open_the_schema_needs_a_key_and_declares_the_keys(keyed_api):
    url, _, _ = keyed_api
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{url}/metrics", timeout=30).status_code == 200
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(f"{url}{path}", timeout=30).status_code == 401, path
    assert httpx.get(f"{url}/docs", headers={"X-API-Key": READ}, timeout=30).status_code == 200
    schema = httpx.get(f"{url}/openapi.json", headers={"X-API-Key": READ}, timeout=30).json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    assert "401" in schema["paths"]["/search"]["get"]["responses"]
    assert schema["paths"]["/search"]["get"]["security"] and "security" not in schema["paths"]["/healthz"]["get"]


def every_route(app) -> list[tuple[BaseRoute, str, set[str] | None]]:
    """Every route the application serves as (the route, its full path, its methods), those of included
    routers too: newer FastAPI keeps an included router as one entry of ``app.routes`` and flattens
    them with ``iter_route_contexts``; older ones copy its routes into ``app.routes``."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    entries = flatten(app.routes) if flatten else app.routes
    return [(getattr(entry, "original_route", entry), entry.path, entry.methods if hasattr(entry, "methods") else None)
            for entry in entries]


def concrete(path: str) -> str:
    """A route's path with each parameter filled in (an image id fits every one there is)."""
    return re.sub(r"\{[^}]*\}", "0" * 64, path)


def test_every_route_there_is_or_will_be_needs_a_key_but_the_probes(tmp_path, test_model_repo):
    """Walks the application's own route table, so a route added tomorrow is checked too: here one
    added after ``create_app`` without any key dependency, and a plain Starlette route beside it."""
    from imagesearch.config import Settings

    settings = Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model="shapes-tiny", api_keys=READ)
    app = create_app(settings)
    app.add_api_route("/added-later", lambda: {"ok": True})
    app.add_route("/added-plain", lambda request: PlainTextResponse("ok"))
    checked = set()
    with ApiThread(app) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        for route, template, methods in every_route(app):
            if isinstance(route, (APIRoute, Route)):
                calls = [(method, concrete(template)) for method in sorted(methods or ())]
            elif isinstance(route, Mount):
                calls = [("GET", concrete(template) + "/")]
            else:  # e.g. a WebSocketRoute: this test must learn to call it before it may exist
                pytest.fail(f"{type(route).__name__} {template}: this test cannot call it yet")
            for method, path in calls:
                answer = http.request(method, path)
                if path in OPEN:
                    assert answer.status_code != 401, (method, path)
                else:
                    assert answer.status_code == 401, (method, path, answer.text)
                    assert method == "HEAD" or answer.json()["error"] == "unauthorized"  # HEAD: the headers alone
                checked.add((method, template))
        for path in ("/added-later", "/added-plain", "/openapi.json", "/docs"):
            assert http.get(path, headers={"X-API-Key": READ}).status_code == 200, path
    assert {("GET", "/added-later"), ("GET", "/added-plain"), ("GET", "/docs"), ("GET", "/openapi.json"),
            ("GET", "/redoc"), ("POST", "/search/image"), ("DELETE", "/images/{image_id}"), ("GET", "/healthz")} <= checked


def test_the_docs_can_be_opened_and_nothing_else_with_them(tmp_path, test_model_repo):
    from imagesearch.config import Settings

    settings = Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model="shapes-tiny", api_keys=READ,
                        api_docs_open=True)
    with ApiThread(create_app(settings)) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
            assert http.get(path).status_code == 200, path
        assert "/search" in http.get("/openapi.json").json()["paths"]
        for path in ("/status", "/search?q=a", "/docs/", "/openapi.json/x"):
            assert http.get(path).status_code == 401, path


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
