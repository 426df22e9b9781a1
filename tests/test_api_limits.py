"""Rate limits against the running API: a token bucket per API key (or per client address when the
API has no keys) for searches, and one for image searches (uploads and image URLs); 429 with
Retry-After and the JSON error shape; the refusals counted in /metrics; the probes never limited."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import SecretStr

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder

KEYS = ("key-one-1a", "key-two-2b", "key-three-3c")
BURST = 3
UPLOAD_BURST = 2


@pytest.fixture(scope="module")
def images(tmp_path_factory, test_model_repo):
    """A data folder with the shapes embedded, and one shape's bytes to upload."""
    root = tmp_path_factory.mktemp("limits")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny")
    shapes = make_shapes(1, seed=41)
    ingest(settings, "--folder", str(write_folder(root / "photos", shapes)))
    return settings, shapes[0].data


def limited(settings: Settings, **update) -> Settings:
    # slow refills (a search token in two seconds, an upload token in ten): a burst sent at once finds
    # the bucket empty however slow the machine, and the next token is more than a second away
    return settings.model_copy(update={"search_rate_per_s": 0.5, "search_burst": BURST, "upload_rate_per_s": 0.1,
                                       "upload_burst": UPLOAD_BURST, **update})


@pytest.fixture(scope="module")
def keyed(images):
    settings, upload = images
    with ApiThread(create_app(limited(settings, api_keys=SecretStr(",".join(KEYS))))) as api, \
            httpx.Client(base_url=api.url, timeout=30) as http:
        yield http, upload


def refused(samples: str, kind: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return next(s.value for f in text_string_to_metric_families(samples) for s in f.samples
                if s.name == "imagesearch_rate_limited_total" and s.labels == {"kind": kind})


def until_refused(send, most: int = 20) -> tuple[int, httpx.Response]:
    """Send until the first 429; how many were served before it, and the 429."""
    for served in range(most):
        answer = send()
        if answer.status_code == 429:
            return served, answer
        assert answer.status_code == 200, answer.text
    pytest.fail(f"{most} requests in a row and none refused")


def assert_429(answer: httpx.Response, kind: str, most_s: int) -> int:
    """The refusal's shape; its Retry-After (seconds), which a rate of a token per ``most_s`` keeps within that."""
    assert answer.status_code == 429 and answer.json()["error"] == "rate_limited" and set(answer.json()) == {"error", "detail"}
    assert kind in answer.json()["detail"]
    retry_after = int(answer.headers["Retry-After"])
    assert 1 <= retry_after <= most_s, retry_after
    return retry_after


def test_a_burst_over_the_limit_waits_retry_after_and_other_keys_go_on(keyed):
    http, _ = keyed
    before = refused(http.get("/metrics").text, "searches")
    first = {"X-API-Key": KEYS[0]}
    served, answer = until_refused(lambda: http.get("/search", params={"q": "a red circle", "k": 2}, headers=first))
    assert served >= BURST
    retry_after = assert_429(answer, "searches", 2)
    refused_at = time.monotonic()
    post = http.post("/search", json={"text": "a red circle"}, headers=first)  # the same bucket, GET or POST
    assert_429(post, "searches", 2)
    other = http.get("/search", params={"q": "a red circle"}, headers={"Authorization": f"Bearer {KEYS[1]}"})
    assert other.status_code == 200, other.text  # another key's bucket is its own
    assert refused(http.get("/metrics").text, "searches") == before + 2

    # Retry-After is honest: waited out (and no longer), the key is served again
    time.sleep(max(0.0, refused_at + retry_after - time.monotonic()))
    again = http.get("/search", params={"q": "a red circle"}, headers=first)
    assert again.status_code == 200, again.text


def test_image_searches_have_a_bucket_of_their_own(keyed):
    http, upload = keyed
    key = {"X-API-Key": KEYS[2]}
    before = refused(http.get("/metrics").text, "uploads")
    served, answer = until_refused(lambda: http.post("/search/image", files={"file": ("x.jpg", upload, "image/jpeg")},
                                                     data={"k": "2"}, headers=key))
    assert served >= UPLOAD_BURST
    assert_429(answer, "uploads", 10)
    by_url = http.post("/search", json={"image_url": "http://127.0.0.1:9/x.jpg"}, headers=key)
    assert_429(by_url, "uploads", 10)  # refused before any fetch: an image URL is encoded like an upload
    assert http.post("/search", json={"text": "a red circle"}, headers=key).status_code == 200  # searches: another bucket
    assert refused(http.get("/metrics").text, "uploads") == before + 2


def test_without_keys_each_address_has_its_own_bucket_and_the_probes_are_never_limited(images):
    settings, _ = images
    with ApiThread(create_app(limited(settings, search_burst=1, search_rate_per_s=0.01))) as api:
        here = httpx.Client(base_url=api.url, timeout=30)
        # 127.0.0.2 is this machine too (all of 127/8 is loopback), seen by the API as another address
        there = httpx.Client(base_url=api.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with here, there:
            assert here.get("/search", params={"q": "a red circle"}).status_code == 200
            second = here.get("/search", params={"q": "a red circle"})
            assert second.status_code == 429 and int(second.headers["Retry-After"]) > 1  # a token in 100 s
            assert there.get("/search", params={"q": "a red circle"}).status_code == 200
            for _ in range(50):
                assert here.get("/healthz").status_code == 200
            assert here.get("/metrics").status_code == 200
            assert here.get("/status").status_code == 200
