"""The search API against a running server (uvicorn on a free port) with the trained test model and
shape images ingested by the real `imagesearch ingest` (a folder, and URLs from a local HTTP server)."""

from __future__ import annotations

import hashlib
import io
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

import httpx
import numpy as np
import pytest
from PIL import Image

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.search import SearchService, TextBatcher
from tests.support import shapes
from tests.support.image_server import ImageServer
from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder

PER_CLASS = 2
UPLOAD_CAP = 200_000


class Api:
    def __init__(self, url: str, settings: Settings, classes: dict[str, tuple[str, str]], images: ImageServer,
                 png_ids: set[str], failed_url: str):
        self.url, self.settings, self.classes, self.images = url, settings, classes, images
        self.png_ids, self.failed_url = png_ids, failed_url
        self.http = httpx.Client(base_url=url, timeout=60)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.http.post(path, **kwargs)


def _png(shape) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(shape.data)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def api(tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("api")
    # no rate limits: these tests send requests faster than any user (test_api_limits.py tests them)
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny",
                        allow_private_networks=True, max_upload_bytes=UPLOAD_CAP, search_rate_per_s=0, upload_rate_per_s=0)
    folder_images = make_shapes(PER_CLASS, seed=1)
    url_images = make_shapes(1, seed=2, classes=[("red", "circle"), ("blue", "square"), ("green", "triangle")])
    classes = {hashlib.sha256(s.data).hexdigest(): (s.colour, s.shape) for s in folder_images}
    with ImageServer() as server:
        lines, png_ids = [], set()
        for i, shape in enumerate(url_images):
            data = _png(shape)
            png_ids.add(hashlib.sha256(data).hexdigest())
            classes[hashlib.sha256(data).hexdigest()] = (shape.colour, shape.shape)
            lines.append(f"{server.add(f'/img/{i}.png', data, 'image/png')}\t{shape.caption}")
        failed_url = server.url("/missing.jpg")  # answers 404: a failed URL in the counts
        lines.append(failed_url)
        (root / "urls.txt").write_text("\n".join(lines) + "\n")
        ingest(settings, "--urls", str(root / "urls.txt"), "--folder", str(write_folder(root / "folder", folder_images)))
        with ApiThread(create_app(settings)) as thread:
            yield Api(thread.url, settings, classes, server, png_ids, failed_url)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    assert "Traceback" not in response.text
    if code:
        assert body["error"] == code, body
    return body


# --- searches ----------------------------------------------------------------------------------


def test_text_search_finds_the_described_shapes(api):
    right_shape = 0
    for colour, shape in shapes.CLASSES:
        response = api.get("/search", params={"q": shapes.caption(colour, shape), "k": PER_CLASS})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["query"] == {"text": shapes.caption(colour, shape)} and body["model"] == "shapes-tiny"
        assert body["took_ms"] >= 0 and len(body["results"]) == PER_CLASS
        found = [api.classes[r["id"]] for r in body["results"]]
        assert all(c == colour for c, _ in found), (colour, shape, found)  # the colour is never wrong
        right_shape += found[0][1] == shape
        top = body["results"][0]
        assert top["image_url"] == f"/images/{top['id']}" and top["width"] > 0 and top["height"] > 0
        assert top["score"] >= body["results"][-1]["score"]
    assert right_shape >= 0.75 * len(shapes.CLASSES), right_shape  # the tiny model mixes up a few shapes


def test_url_images_keep_their_source_url_and_caption(api):
    body = api.post("/search", json={"text": "a red circle", "k": 10, "filters": {"format": ["png"]}}).json()
    assert body["results"] and {r["id"] for r in body["results"]} <= api.png_ids
    top = body["results"][0]
    assert top["url"].startswith(api.images.url("/img/")) and top["captions"] == ["a red circle"]
    assert top["sources"] == ["url"] and top["format"] == "png"


def test_filters_and_min_score(api):
    jpeg = api.post("/search", json={"text": "a red circle", "k": 100, "filters": {"format": ["jpeg"]}}).json()
    assert len(jpeg["results"]) == PER_CLASS * len(shapes.CLASSES)
    assert {r["format"] for r in jpeg["results"]} == {"jpeg"}
    none = api.post("/search", json={"text": "a red circle", "k": 5, "filters": {"min_width": 10_000}}).json()
    assert none["results"] == []
    cut = jpeg["results"][3]["score"]
    above = api.post("/search", json={"text": "a red circle", "k": 100, "min_score": cut}).json()["results"]
    assert above and all(r["score"] >= cut for r in above) and len(above) < len(jpeg["results"])


def test_more_like_this_by_image_id(api):
    image_id = next(i for i, c in api.classes.items() if c == ("yellow", "square") and i not in api.png_ids)
    body = api.post("/search", json={"image_id": image_id, "k": 3}).json()
    assert body["query"] == {"image_id": image_id}
    assert body["results"][0]["id"] == image_id and body["results"][0]["score"] > 0.999
    assert api.classes[body["results"][1]["id"]][0] == "yellow"


def test_search_by_image_url(api):
    url = api.images.url("/img/1.png")
    body = api.post("/search", json={"image_url": url, "k": 3}).json()
    assert body["query"] == {"image_url": url}
    assert body["results"][0]["url"] == url and body["results"][0]["score"] > 0.999


def test_search_by_uploaded_image(api):
    fresh = make_shapes(1, seed=99, classes=[("green", "square")])[0]  # not in the index
    response = api.post("/search/image", files={"file": ("mine.jpg", fresh.data, "image/jpeg")}, data={"k": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == {"image": "mine.jpg", "bytes": len(fresh.data)} and len(body["results"]) == 2
    assert [api.classes[r["id"]][0] for r in body["results"]] == ["green", "green"]


# --- images ------------------------------------------------------------------------------------


def test_image_bytes_with_caching_headers(api):
    result = api.get("/search", params={"q": "a blue square", "k": 20}).json()["results"]
    for fmt, content_type in (("jpeg", "image/jpeg"), ("png", "image/png")):
        hit = next(r for r in result if r["format"] == fmt)
        response = api.get(hit["image_url"])
        assert response.status_code == 200 and response.headers["content-type"] == content_type
        assert hashlib.sha256(response.content).hexdigest() == hit["id"]
        assert response.headers["etag"] == f'"{hit["id"]}"'
        assert "immutable" in response.headers["cache-control"]
        again = api.get(hit["image_url"], headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content


@pytest.mark.parametrize("bad_id", [
    "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "%2e%2e", "0" * 63 + "%00", "%20" + "0" * 64,
    "0" * 64 + "%0A",  # a regex "$" would also match before this final newline
])
def test_image_id_is_validated_before_any_path(api, bad_id):
    """An id that is not 64 lower-case hex characters is refused by the id check itself (400 invalid_id),
    never looked up: without the check these would be 404 not_found from the store lookup."""
    assert_error(api.get(f"/images/{bad_id}"), 400, "invalid_id")


@pytest.mark.parametrize("bad_path", ["..%2F..%2Fetc%2Fpasswd", "%2F" + "0" * 64, "0" * 64 + "%2Fx"])
def test_image_id_with_a_slash_never_reaches_the_handler(api, bad_path):
    """A (decoded) '/' makes the path match no route: the router's own JSON 404 (http_404), not the
    handler's not_found, so no id with a slash can be turned into a file path."""
    assert_error(api.get(f"/images/{bad_path}"), 404, "http_404")


def test_unknown_image_is_404(api):
    assert_error(api.get(f"/images/{'0' * 64}"), 404, "not_found")


# --- every bad input: a JSON 4xx with a clear message ------------------------------------------


@pytest.mark.parametrize("params, status, needle", [
    ({"q": "a red circle", "k": 0}, 400, "k must be between 1 and 100"),
    ({"q": "a red circle", "k": 101}, 400, "k must be between 1 and 100"),
    ({"q": "a red circle", "k": -5}, 400, "k must be between 1 and 100"),
    ({"q": "a red circle", "k": "ten"}, 422, "k:"),
    ({"q": ""}, 400, "empty"),
    ({"q": "   "}, 400, "empty"),
    ({"q": "x" * 1001}, 400, "limit is 1000"),
    ({"k": 3}, 422, "q: Field required"),
    ({"q": "a", "min_score": 3}, 422, "min_score"),
])
def test_get_search_bad_input(api, params, status, needle):
    body = assert_error(api.get("/search", params=params), status)
    assert needle in body["detail"], body


@pytest.mark.parametrize("payload, status, code, needle", [
    ({}, 422, "invalid_request", "exactly one of text, image_id, image_url, or positive_ids alone"),
    ({"text": "a", "image_id": "0" * 64}, 422, "invalid_request", "exactly one"),
    ({"text": "a", "k": 1000}, 400, "invalid_query", "k must be between"),
    ({"text": "a", "k": 10**40}, 400, "invalid_query", "k must be between"),
    ({"text": ""}, 400, "invalid_query", "empty"),
    ({"text": "y" * 5000}, 400, "invalid_query", "limit is 1000"),
    ({"image_id": "not-a-hash"}, 400, "invalid_query", "not an image id"),
    ({"image_id": "f" * 64}, 404, "not_found", "no image with id"),
    ({"text": "a", "filters": {"min_width": 10**30}}, 422, "invalid_request", "filters.min_width"),
    ({"text": "a", "filters": {"format": ["exe"]}}, 422, "invalid_request", "filters.format"),
    ({"text": "a", "min_score": 1.5}, 422, "invalid_request", "min_score"),
    ({"text": "a", "colour": "red"}, 422, "invalid_request", "colour"),
    ({"image_url": "file:///etc/passwd"}, 400, "blocked", "scheme"),
    ({"image_url": "not a url"}, 400, None, "image_url"),
])
def test_post_search_bad_input(api, payload, status, code, needle):
    body = assert_error(api.post("/search", json=payload), status, code)
    assert needle in body["detail"], body


@pytest.mark.parametrize("raw, needle", [
    (b'{"text": "a", ', "JSON"),
    (b'["a red circle"]', "valid dictionary"),
    (b'{"text": "\\ud800"}', "lone surrogate"),
    (b'{"text": "a", "min_score": NaN}', "min_score"),
])
def test_post_search_malformed_body(api, raw, needle):
    response = api.post("/search", content=raw, headers={"content-type": "application/json"})
    assert needle in assert_error(response, 422, "invalid_request")["detail"]


def test_image_url_failures_are_4xx(api):
    api.images.add("/text.html", b"<html>hello</html>", "text/html")
    api.images.add("/huge.jpg", b"\xff\xd8" + b"0" * (UPLOAD_CAP + 10))
    api.images.add("/noai.jpg", make_shapes(1, seed=5)[0].data, headers={"X-Robots-Tag": "noai"})
    for path, status, code in (("/missing.jpg", 400, "http_status"), ("/text.html", 400, "not_an_image"),
                               ("/huge.jpg", 413, "too_large"), ("/noai.jpg", 400, "robots")):
        assert_error(api.post("/search", json={"image_url": api.images.url(path)}), status, code)


def test_image_url_refused_by_the_ssrf_guard(api):
    """With the default settings, a URL on a private or loopback address is never fetched."""
    guarded = api.settings.model_copy(update={"allow_private_networks": False})
    api.images.add("/inside.jpg", make_shapes(1, seed=6)[0].data)
    with ApiThread(create_app(guarded)) as thread:
        response = httpx.post(f"{thread.url}/search", json={"image_url": api.images.url("/inside.jpg")}, timeout=30)
    assert "non-public address" in assert_error(response, 400, "blocked")["detail"]
    assert api.images.hits["/inside.jpg"] == 0


@pytest.mark.parametrize("data, code", [(b"plain text, not a picture", "not_an_image"), (b"", "empty"),
                                        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_an_image")])
def test_upload_that_is_not_an_image(api, data, code):
    response = api.post("/search/image", files={"file": ("x.jpg", data, "image/jpeg")})
    assert "cannot be used" in assert_error(response, 400, code)["detail"]


def test_upload_over_the_size_cap(api):
    big = b"\xff\xd8" + b"1" * (UPLOAD_CAP * 2)
    response = api.post("/search/image", files={"file": ("big.jpg", big, "image/jpeg")})
    assert str(UPLOAD_CAP) in assert_error(response, 413, "too_large")["detail"]
    just_over = b"\xff\xd8" + b"1" * UPLOAD_CAP  # under the early Content-Length check, over the cap
    assert_error(api.post("/search/image", files={"file": ("big.jpg", just_over, "image/jpeg")}), 413, "too_large")


def test_upload_bad_form(api):
    assert "file" in assert_error(api.post("/search/image", data={"k": "3"}), 422)["detail"]
    fresh = make_shapes(1, seed=7)[0].data
    assert_error(api.post("/search/image", files={"file": ("a.jpg", fresh)}, data={"k": "0"}), 400, "invalid_query")


def test_unknown_route_and_method(api):
    assert_error(api.get("/nothing-here"), 404)
    assert_error(api.http.delete("/search"), 405)


# --- operations --------------------------------------------------------------------------------


def test_healthz(api):
    response = api.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["model"] == "shapes-tiny"
    assert body["encoder"]["ok"] is True and body["encoder"]["backend"] == "onnx"
    assert body["store"]["ok"] is True and body["store"]["backend"] == "local"


def test_status(api):
    body = api.get("/status").json()
    total = PER_CLASS * len(shapes.CLASSES) + len(api.png_ids)
    assert body["counts"]["images"] == total and body["counts"]["embedded"] == total
    assert body["counts"]["pending"] == 0
    assert body["counts"]["failed_urls"] == 1 and body["counts"]["failed_by_reason"] == {"http_status": 1}
    assert body["model"]["slug"] == "shapes-tiny" and body["model"]["dim"] == 64
    assert body["backends"] == {"encoder": "onnx", "store": "local"}
    assert body["limits"]["max_k"] == 100 and body["limits"]["max_upload_bytes"] == UPLOAD_CAP
    installed = {p: metadata.version(p) for p in ("imagesearch", "fastapi", "onnxruntime", "numpy", "pillow",
                                                  "elasticsearch", "tritonclient")}
    assert body["versions"] == {"python": platform.python_version(), **installed}


def metric_samples(api: Api) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(sample name, its labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(api.get("/metrics").text) for sample in family.samples}


def test_metrics_count_this_tests_own_requests(api):
    """Each request is timed once under its route template, method and status; the encoder, the store
    and the text batches count the calls these requests made (a cached repeat makes no encoder call)."""
    before = metric_samples(api)

    def delta(samples: dict, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return samples.get(key, 0.0) - before.get(key, 0.0)

    for text in ("a metrics probe circle", "a metrics probe square", "a metrics probe circle"):
        assert api.get("/search", params={"q": text, "k": 2}).status_code == 200
    assert_error(api.post("/search", json={}), 422)
    assert_error(api.get(f"/images/{'0' * 64}"), 404, "not_found")
    expected = {("/search", "GET", "200"): 3, ("/search", "POST", "422"): 1, ("/images/{image_id}", "GET", "404"): 1}
    latency = "imagesearch_http_request_duration_seconds"

    def requests_seen(samples: dict) -> dict:
        return {labels: delta(samples, f"{latency}_count", route=labels[0], method=labels[1], status=labels[2])
                for labels in expected}

    # a request is timed once its answer has gone out: wait until the last one is in, then compare
    deadline = time.monotonic() + 30
    while True:
        after = metric_samples(api)
        seen = requests_seen(after)
        if all(seen[labels] >= n for labels, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert seen == expected
    for route, method, status in expected:
        labels = {"route": route, "method": method, "status": status}
        assert delta(after, f"{latency}_bucket", **labels, le="+Inf") == expected[route, method, status]
        assert delta(after, f"{latency}_sum", **labels) > 0
    assert delta(after, "imagesearch_encoder_duration_seconds_count", op="encode_texts") == 2
    assert delta(after, "imagesearch_store_duration_seconds_count", op="search") == 3
    assert delta(after, "imagesearch_store_duration_seconds_count", op="get") == 1
    assert delta(after, "imagesearch_text_batch_size_count") == 2 and delta(after, "imagesearch_text_batch_size_sum") == 2
    assert after[("imagesearch_rate_limited_total", frozenset({("kind", "searches")}))] == 0  # limits off here


def test_openapi_docs(api):
    assert "swagger" in api.get("/docs").text.lower()
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/search", "/search/image", "/duplicates", "/images/{image_id}", "/healthz", "/status", "/metrics"} <= set(paths)


def test_dependencies_down_give_503(tmp_path, test_model_repo):
    """A store that cannot open and a model that is not exported: the API starts, says what is wrong
    in /healthz with a 503, and answers searches with a JSON 503 (not a crash)."""
    (tmp_path / "not-a-dir").write_text("a file where the data directory should be")
    (tmp_path / "empty-repo").mkdir()
    cases = [
        ("store", Settings(data_dir=tmp_path / "not-a-dir", model_repository=test_model_repo, model="shapes-tiny"),
         "store_unavailable"),
        ("encoder", Settings(data_dir=tmp_path / "var", model_repository=tmp_path / "empty-repo"), "encoder_unavailable"),
    ]
    for broken, settings, code in cases:
        with ApiThread(create_app(settings)) as thread:
            health = httpx.get(f"{thread.url}/healthz")
            assert health.status_code == 503
            body = health.json()
            assert body["ok"] is False and body[broken]["ok"] is False and body[broken]["error"]
            search = httpx.get(f"{thread.url}/search", params={"q": "a red circle"})
            assert_error(search, 503, code)
            assert search.headers["retry-after"]


# --- cache and micro-batching (the service the API runs) -----------------------------------------


def test_concurrent_queries_share_encoder_calls_and_repeats_hit_the_cache(settings, test_model_repo):
    settings = settings.model_copy(update={"text_batch_wait_ms": 300.0, "text_batch_max": 8})
    service = SearchService(settings)
    try:
        texts = [shapes.caption(c, s) for c, s in shapes.CLASSES[:8]]
        start = threading.Barrier(len(texts))

        def query(text):
            start.wait()
            return service.text_vector(text)

        with ThreadPoolExecutor(len(texts)) as pool:
            vectors = list(pool.map(query, texts))
        stats = service.stats()
        assert stats["texts_encoded"] == len(texts) and stats["encoder_calls"] < len(texts)
        alone = np.stack([service.encoder.encode_texts([t])[0] for t in texts])  # batched == one by one
        np.testing.assert_allclose(np.stack(vectors), alone, atol=1e-5)

        service.store.ensure_model(service.model, service.card.dim)  # an empty index: searches answer nothing
        again = service.search_text(texts[0], k=3)
        stats2 = service.stats()
        assert stats2["encoder_calls"] == stats["encoder_calls"] and stats2["cache_hits"] == stats["cache_hits"] + 1
        assert again.query == {"text": texts[0]} and again.results == []
    finally:
        service.close()


def worker_is_in(batcher: TextBatcher, function: str) -> bool:
    """Whether the batcher's worker thread is running ``function`` now (its current stack, as a debugger sees it)."""
    frame = sys._current_frames().get(batcher._thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_a_lone_query_is_encoded_at_once_and_the_wait_is_spent_only_while_queries_come_together():
    calls, started, release = [], threading.Event(), threading.Event()

    def encode(texts):
        calls.append(list(texts))
        started.set()
        release.wait(30)
        return np.ones((len(texts), 4), np.float32)

    batcher = TextBatcher(encode, max_batch=8, max_wait_s=5.0)
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.encode, "a")
            assert started.wait(2.5), "a lone query waited for others"  # the wait is 5 s
            later = [pool.submit(batcher.encode, t) for t in ("b", "c")]  # queued while "a" is encoded
            while batcher._queue.qsize() < 2:
                threading.Event().wait(0.01)
            release.set()
            for future in (first, *later):
                assert future.result(30).shape == (4,)
            assert calls == [["a"], ["b", "c"]]  # drained together, without waiting for more

            # the last call held two: now a query waits for the next one, which shares its call; "e"
            # comes once the worker holds "d" and is collecting (with both queued, no wait was needed)
            together = [pool.submit(batcher.encode, "d")]
            deadline = time.monotonic() + 10
            while not worker_is_in(batcher, "_collect"):
                assert time.monotonic() < deadline and not together[0].done(), "the worker never waited for a second query"
                threading.Event().wait(0.001)
            together.append(pool.submit(batcher.encode, "e"))
            for future in together:
                future.result(30)
        assert calls[2:] == [["d", "e"]]
    finally:
        release.set()
        batcher.close()


# --- fuzzing: nothing a client sends gives a 5xx -----------------------------------------------


def test_fuzzed_requests_never_get_a_server_error(api):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    checked = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def no_server_error(case):
                response = case.call(base_url=api.url, timeout=60)
                assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"

            try:
                no_server_error()
                checked.add((operation.method.upper(), operation.path, mode.value))
            except Unsatisfiable:  # an operation without inputs has no invalid ones to send
                assert mode == schemathesis.GenerationMode.NEGATIVE
    every = {("GET", "/search"), ("POST", "/search"), ("POST", "/search/image"), ("GET", "/duplicates"),
             ("GET", "/images/{image_id}"), ("GET", "/images/{image_id}/thumbnail"), ("DELETE", "/images/{image_id}"),
             ("GET", "/healthz"), ("GET", "/status"), ("GET", "/metrics"), ("GET", "/tags")}
    # every route that takes an API key header has invalid input to send; /healthz and /metrics take nothing
    with_invalid_input = every - {("GET", "/healthz"), ("GET", "/metrics")}
    assert checked == {(*o, "positive") for o in every} | {(*o, "negative") for o in with_invalid_input}, checked


def test_image_not_embedded_yet_is_409(tmp_path, test_model_repo):
    """Downloaded but not embedded yet (the embed worker has not got to it): a clear 409, bytes served.
    On a data directory of its own, so the module's index (and every other test) never sees it."""
    from imagesearch.blobs import FolderBlobStore
    from imagesearch.records import ImageRecord
    from imagesearch.stores import make_store

    settings = Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model="shapes-tiny")
    data = make_shapes(1, seed=11)[0].data
    image_id = FolderBlobStore(settings.images_dir).put(data, "jpeg")
    store = make_store(settings)
    store.upsert_images([ImageRecord(id=image_id, width=96, height=96, format="jpeg", bytes=len(data), sources=["upload"])])
    store.close()
    with ApiThread(create_app(settings)) as thread, httpx.Client(base_url=thread.url, timeout=60) as http:
        body = assert_error(http.post("/search", json={"image_id": image_id}), 409, "pending")
        assert "still pending" in body["detail"]
        assert http.get(f"/images/{image_id}").content == data
        counts = http.get("/status").json()["counts"]
    assert (counts["images"], counts["embedded"], counts["pending"]) == (1, 0, 1)


# --- a running API and a growing store ------------------------------------------------------------


def test_a_running_api_sees_what_is_embedded_after_it_started(settings, tmp_path):
    """Before anything is embedded: 503 saying so (not an empty page that looks like "no match");
    after an ingest in another process, the same running API finds the new images."""
    settings = settings.model_copy(update={"text_cache_size": 2})
    with ApiThread(create_app(settings)) as api:
        empty = httpx.get(f"{api.url}/search", params={"q": "a red circle"}, timeout=30)
        assert empty.status_code == 503 and empty.json()["error"] == "store_unavailable"
        assert "nothing has been embedded" in empty.json()["detail"]
        assert empty.headers["Retry-After"]

        ingest(settings, "--folder", str(write_folder(tmp_path / "photos", make_shapes(2, seed=71))))
        found = httpx.get(f"{api.url}/search", params={"q": "a red circle", "k": 2}, timeout=30)
        assert found.status_code == 200 and len(found.json()["results"]) == 2

        # the text cache keeps the 2 latest texts: a third pushes out the oldest, and /status counts it all
        for text in ("a blue square", "a green triangle", "a blue square", "a red circle"):
            assert httpx.get(f"{api.url}/search", params={"q": text}, timeout=30).status_code == 200
        stats = httpx.get(f"{api.url}/status", timeout=30).json()["text_queries"]
        # misses: red (503 call), blue, green, red again (evicted by blue and green); hits: red (2nd call), blue
        assert (stats["cache_size"], stats["cache_hits"], stats["cache_misses"]) == (2, 2, 4)
        assert stats["texts_encoded"] == 4
        assert httpx.get(f"{api.url}/status", timeout=30).json()["counts"]["embedded"] == 24


# --- keyword and hybrid search ------------------------------------------------------------------


def test_hybrid_search_puts_an_exact_caption_match_first_and_says_what_matched(settings, tmp_path):
    """A name the model has never seen ("Zanzibar lighthouse") is in one caption: vector search
    cannot find it, keyword search finds only it, hybrid puts it first and keeps the visual matches."""
    images = make_shapes(2, seed=95)
    named = make_shapes(1, seed=96, classes=[("blue", "square")])[0]
    with ImageServer() as server:
        (tmp_path / "urls.txt").write_text(f"{server.add('/n.jpg', named.data)}\tZanzibar lighthouse\n")
        ingest(settings, "--folder", str(write_folder(tmp_path / "photos", images)), "--urls", str(tmp_path / "urls.txt"))
    named_id = hashlib.sha256(named.data).hexdigest()
    with ApiThread(create_app(settings)) as api:
        def search(q: str, mode: str | None = None, k: int = 5) -> list[dict]:
            params = {"q": q, "k": k, **({"mode": mode} if mode else {})}
            answer = httpx.get(f"{api.url}/search", params=params, timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.json()["results"]

        vector = search("Zanzibar lighthouse")
        assert all(r["matched"] == ["vector"] for r in vector)
        text = search("Zanzibar lighthouse", "text")
        assert [r["id"] for r in text] == [named_id] and text[0]["matched"] == ["text"]
        hybrid = search("Zanzibar lighthouse", "hybrid")
        assert hybrid[0]["id"] == named_id and hybrid[0]["matched"] == ["vector", "text"] and len(hybrid) == 5
        assert hybrid[0]["score"] > hybrid[1]["score"]  # fused: 1/61 + 1/(60 + its vector rank) against 1/61 at most
        # a query the captions and file names do not name is still answered by meaning
        assert all(r["id"] in {hashlib.sha256(i.data).hexdigest() for i in images if i.colour == "red"}
                   for r in search("a red circle", "hybrid", k=2))
        posted = httpx.post(f"{api.url}/search", json={"text": "Zanzibar", "mode": "text"}, timeout=30).json()
        assert [r["id"] for r in posted["results"]] == [named_id] and posted["query"]["mode"] == "text"
        bad = httpx.post(f"{api.url}/search", json={"image_id": named_id, "mode": "hybrid"}, timeout=30)
        assert bad.status_code == 422 and "needs text" in bad.text
