"""The downloader against a real local HTTP server and a real local store."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from imagesearch.blobs import FolderBlobStore, sha256_hex
from imagesearch.config import Settings
from imagesearch.ingest import downloader
from imagesearch.ingest.downloader import download, retry_failed
from imagesearch.ingest.urls import UrlEntry
from imagesearch.stores.local import LocalStore
from tests.support.image_server import Reply
from tests.support.shapes import draw_shape

RNG = random.Random(5)


def shape_jpeg(colour: str, shape: str, size=(64, 48)) -> bytes:
    return draw_shape(colour, shape, RNG, size).encode("JPEG")


@pytest.fixture()
def dl_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "var", allow_private_networks=True, download_retries=2,
                    download_backoff_s=0.01, download_backoff_max_s=0.05, download_read_timeout_s=0.5,
                    download_total_timeout_s=5, download_max_bytes=100_000, download_write_batch=4)


class RecordingStore(LocalStore):
    """The real local store, remembering how many records and failures each write carried."""

    def __init__(self, path):
        super().__init__(path)
        self.writes: list[tuple[str, int]] = []

    def upsert_images(self, records):
        self.writes.append(("records", len(records)))
        return super().upsert_images(records)

    def record_failures(self, failures):
        self.writes.append(("failures", len(failures)))
        super().record_failures(failures)


@pytest.fixture()
def store(dl_settings):
    s = RecordingStore(dl_settings.data_dir / "store.sqlite3")
    yield s
    s.close()


class Events:
    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def __call__(self, event: str, n: int) -> None:
        self.calls.append((event, n))

    def total(self, event: str) -> int:
        return sum(n for e, n in self.calls if e == event)


def run(entries, store, settings, progress=None):
    return asyncio.run(download(entries, store, settings, progress=progress))


def test_mixed_list_good_and_bad(image_server, store, dl_settings):
    red, blue, green = shape_jpeg("red", "circle"), shape_jpeg("blue", "square"), shape_jpeg("green", "triangle")
    png = draw_shape("yellow", "circle", RNG, (30, 40)).encode("PNG")
    big = bytes(150_000)
    cut = shape_jpeg("red", "square", (300, 300))
    good = {
        "/red.jpg": (red, "a red circle"),
        "/blue.jpg": (blue, "a blue square"),
        "/same-blue.jpg": (blue, "blue again"),  # same bytes under a second URL
        "/flaky.jpg": (green, "a green triangle"),  # 500, then 200
        "/busy.png": (png, ""),  # 429 with Retry-After, then 200
        "/moved": (red, "moved red"),  # redirect to the red image: a duplicate
    }
    for path in ("/red.jpg", "/blue.jpg", "/same-blue.jpg"):
        image_server.add(path, good[path][0])
    image_server.add_sequence("/flaky.jpg", [Reply(500, b"", "text/plain"), Reply(200, green)])
    image_server.add_sequence("/busy.png", [Reply(429, b"", "text/plain", {"Retry-After": "1"}), Reply(200, png, "image/png")])
    image_server.add_redirect("/moved", "/red.jpg")
    bad = {
        "/missing.jpg": "http_status",
        "/slow.jpg": "timeout",
        "/big.jpg": "too_large",
        "/page.jpg": "not_an_image",
        "/cut.jpg": "not_an_image",
        "/loop": "too_many_redirects",
        "/noai.jpg": "robots",
    }
    image_server.add_sequence("/slow.jpg", [Reply(200, red, body_delay_s=2.0)])
    image_server.add("/big.jpg", big)
    image_server.add("/page.jpg", b"<html><body>not an image</body></html>", "image/jpeg")
    image_server.add("/cut.jpg", cut[: len(cut) // 2])
    image_server.add_redirect("/loop", "/loop")
    image_server.add("/noai.jpg", blue, headers={"X-Robots-Tag": "noai"})

    entries = [UrlEntry(image_server.url(p), caption) for p, (_, caption) in good.items()]
    entries += [UrlEntry(image_server.url(p), f"bad {p}") for p in bad]
    events = Events()
    summary = run(entries, store, dl_settings, events)

    assert (summary.total, summary.downloaded, summary.duplicates, summary.already_known) == (13, 4, 2, 0)
    assert summary.failed == {"http_status": 1, "timeout": 1, "too_large": 1, "not_an_image": 2,
                              "too_many_redirects": 1, "robots": 1}
    assert "4 downloaded, 2 duplicates" in summary.describe()
    assert (events.total("downloaded"), events.total("duplicate"), events.total("failed:not_an_image")) == (4, 2, 2)
    # written in small batches: 6 records and 7 failures, never more than 4 (the batch) in one write
    assert {kind: sum(n for k, n in store.writes if k == kind) for kind in ("records", "failures")} == {
        "records": 6, "failures": 7}
    assert max(n for _, n in store.writes) <= dl_settings.download_write_batch

    blobs = FolderBlobStore(dl_settings.images_dir)
    blue_record = store.get(sha256_hex(blue))
    assert sorted(blue_record.urls) == sorted([image_server.url("/blue.jpg"), image_server.url("/same-blue.jpg")])
    assert sorted(blue_record.captions) == ["a blue square", "blue again"]
    assert (blue_record.width, blue_record.height, blue_record.format, blue_record.bytes) == (64, 48, "jpeg", len(blue))
    assert blue_record.sources == ["url"]
    assert blobs.get(blue_record.id, "jpeg") == blue
    png_record = store.get(sha256_hex(png))
    assert (png_record.format, png_record.width, png_record.height, png_record.captions) == ("png", 30, 40, [])
    assert blobs.get(png_record.id, "png") == png
    red_record = store.get(sha256_hex(red))
    assert sorted(red_record.urls) == sorted([image_server.url("/red.jpg"), image_server.url("/moved")])
    assert store.get(sha256_hex(green)).captions == ["a green triangle"]
    # only images reached the store; the failures are remembered per URL with their reason
    assert len(list(dl_settings.images_dir.glob("??/*"))) == 4  # (their thumbnails are in thumbnails/)
    failures = {f.url: f for f in store.failures()}
    assert {url: f.reason for url, f in failures.items()} == {image_server.url(p): r for p, r in bad.items()}
    assert failures[image_server.url("/missing.jpg")].detail == "HTTP 404"
    assert failures[image_server.url("/missing.jpg")].caption == "bad /missing.jpg"
    assert failures[image_server.url("/slow.jpg")].attempts == 3


def test_rerun_does_no_new_work_and_retry_failed_retries_only_failures(image_server, store, dl_settings):
    red, blue = shape_jpeg("red", "circle"), shape_jpeg("blue", "square")
    image_server.add("/red.jpg", red)
    image_server.add("/blue.jpg", blue)
    image_server.add("/gone.jpg", b"", "text/plain", status=410)
    entries = [UrlEntry(image_server.url(p), p) for p in ("/red.jpg", "/blue.jpg", "/gone.jpg", "/later.jpg")]
    first = run(entries, store, dl_settings)
    assert (first.downloaded, first.failed) == (2, {"http_status": 2})
    hits = dict(image_server.hits)

    second = run(entries, store, dl_settings)  # the same list again
    assert (second.downloaded, second.duplicates, second.already_known, second.skipped_failed) == (0, 0, 2, 2)
    assert dict(image_server.hits) == hits  # not one request

    image_server.add("/later.jpg", shape_jpeg("green", "circle"))  # one failure is fixed upstream
    retried = asyncio.run(retry_failed(store, dl_settings))
    assert (retried.total, retried.downloaded, retried.failed) == (2, 1, {"http_status": 1})
    assert image_server.hits["/red.jpg"] == hits["/red.jpg"]  # successes are not fetched again
    assert image_server.hits["/gone.jpg"] == 2
    failures = store.failures()
    assert [(f.url, f.attempts) for f in failures] == [(image_server.url("/gone.jpg"), 2)]  # attempts add up
    assert store.get(sha256_hex(red)) is not None and len(store.known_urls(e.url for e in entries)) == 3


def test_concurrency_per_host_and_in_total(image_server, store, dl_settings):
    settings = dl_settings.model_copy(update={"download_concurrency": 3, "download_per_host": 2})
    paths = []
    for i in range(12):
        paths.append(f"/img{i}.jpg")
        image_server.add_sequence(paths[-1], [Reply(200, shape_jpeg("red", "circle"), body_delay_s=0.05)])
    one_host = [image_server.url(p) for p in paths[:6]]
    run(one_host, store, settings)
    assert image_server.max_in_flight == 2  # one host: never more than download_per_host at once

    image_server.max_in_flight = 0
    # "localhost" is another host name for the same server: two hosts, three requests in flight at most
    two_hosts = [image_server.url(p).replace("127.0.0.1", h) for p in paths[6:] for h in ("127.0.0.1", "localhost")]
    summary = run(two_hosts, store, settings)
    assert image_server.max_in_flight == 3
    assert summary.downloaded + summary.duplicates == 12


def test_guard_on_blocks_the_local_server(image_server, store, dl_settings):
    settings = dl_settings.model_copy(update={"allow_private_networks": False})
    urls = [image_server.add("/red.jpg", shape_jpeg("red", "circle")), "http://169.254.169.254/latest/meta-data/",
            "ftp://example.com/x.jpg"]
    summary = run(urls, store, settings)
    assert summary.failed == {"blocked": 3} and summary.downloaded == 0
    assert image_server.hits["/red.jpg"] == 0
    assert {f.reason for f in store.failures()} == {"blocked"}


# --- robots.txt ----------------------------------------------------------------------------------

ROBOTS = """\
User-agent: imagesearch
Disallow: /private/
Allow: /private/ok.jpg
Crawl-delay: 1

User-agent: *
Disallow: /
"""


def robots_urls(image_server) -> dict[str, str]:
    return {name: image_server.add(f"/{name}", shape_jpeg(colour, "circle"))
            for name, colour in (("a.jpg", "red"), ("b.jpg", "blue"), ("private/x.jpg", "green"), ("private/ok.jpg", "yellow"))}


def test_robots_txt_rules_for_our_agent_and_its_crawl_delay_are_obeyed(image_server, store, dl_settings):
    image_server.add("/robots.txt", ROBOTS.encode(), "text/plain")
    urls = robots_urls(image_server)
    summary = run(list(urls.values()), store, dl_settings)
    assert summary.downloaded == 3 and summary.failed == {"robots": 1}
    (failure,) = store.failures()
    assert failure.url == urls["private/x.jpg"] and "disallows it for imagesearch" in failure.detail
    assert image_server.hits["/robots.txt"] == 1 and image_server.hits["/private/x.jpg"] == 0  # asked once, never fetched
    starts = sorted(t for t, path in image_server.started if path != "/robots.txt")
    # Crawl-delay: 1 between the starts the client paces; the server sees them a connection later, so a
    # loaded machine shifts each by up to a fraction of a second (without pacing they come together).
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 3 and min(gaps) >= 0.75 and sum(gaps) >= 1.9, gaps


def test_no_robots_txt_allows_everything_and_the_setting_turns_it_off(image_server, store, dl_settings):
    urls = robots_urls(image_server)  # no /robots.txt: 404
    assert run(list(urls.values())[:2], store, dl_settings).downloaded == 2
    assert image_server.hits["/robots.txt"] == 1
    image_server.add("/robots.txt", ROBOTS.encode(), "text/plain")
    off = dl_settings.model_copy(update={"download_obey_robots": False})  # a source the operator owns
    assert run([urls["private/x.jpg"]], store, off).downloaded == 1
    assert image_server.hits["/robots.txt"] == 1  # not even asked


def test_an_erroring_robots_txt_disallows_the_host_until_retried(image_server, store, dl_settings):
    image_server.add("/robots.txt", b"overloaded", "text/plain", status=503)
    urls = robots_urls(image_server)
    summary = run(list(urls.values()), store, dl_settings)
    assert summary.failed == {"robots": 4} and summary.downloaded == 0
    assert all("unreachable" in f.detail and "RFC 9309" in f.detail for f in store.failures())
    assert sum(image_server.hits[f"/{name}"] for name in urls) == 0  # not one image asked for
    assert image_server.hits["/robots.txt"] == 2  # one retry, once for the whole run

    image_server.add("/robots.txt", ROBOTS.encode(), "text/plain")  # the site is back
    retried = asyncio.run(retry_failed(store, dl_settings))
    assert retried.downloaded == 3 and retried.failed == {"robots": 1}


def test_a_robots_txt_that_hangs_counts_as_unreachable_within_the_timeouts(image_server, store, dl_settings):
    image_server.add_sequence("/robots.txt", [Reply(200, ROBOTS.encode(), "text/plain", body_delay_s=30, body_delay_after=5)])
    urls = robots_urls(image_server)
    summary = run(list(urls.values()), store, dl_settings)
    assert summary.failed == {"robots": 4} and summary.seconds < 10  # two attempts of a 0.5 s read timeout
    assert all("timeout" in f.detail for f in store.failures())


class SlowDisk(FolderBlobStore):
    """The real image files, written only once the test lets the disk go (a disk far slower than the network)."""

    def __init__(self, root):
        super().__init__(root)
        self.go = threading.Event()

    def put_many(self, items):
        self.go.wait(30)
        return super().put_many(items)


def test_a_slow_disk_holds_up_the_fetches_instead_of_filling_the_memory(image_server, store, dl_settings, monkeypatch):
    images = [shape_jpeg("red", "circle", (40 + i, 40)) for i in range(40)]
    urls = [image_server.add(f"/slow-disk/{i}.jpg", data) for i, data in enumerate(images)]
    settings = dl_settings.model_copy(update={"download_concurrency": 4, "download_per_host": 4})
    blobs = SlowDisk(settings.images_dir)
    # Each fetch worker hands its result to the writer's ``add``, which returns at once unless the
    # disk is behind: count the workers inside it, to see the moment all of them wait for the disk.
    handing_over, real_add = [0], downloader._BatchWriter.add

    async def counted_add(self, item):
        handing_over[0] += 1
        try:
            await real_add(self, item)
        finally:
            handing_over[0] -= 1

    monkeypatch.setattr(downloader._BatchWriter, "add", counted_add)

    def fetched_so_far() -> int:
        return sum(n for path, n in image_server.hits.items() if path.startswith("/slow-disk/"))

    async def main():
        downloading = asyncio.create_task(download(urls, store, settings, blobs=blobs))
        while handing_over[0] < settings.download_concurrency and fetched_so_far() < len(urls):
            await asyncio.sleep(0.01)  # until every fetch worker waits for the disk (unbounded: all is fetched)
        held_at = fetched_so_far()
        blobs.go.set()
        return held_at, await downloading

    fetched, summary = asyncio.run(main())
    # at most the batches waiting for the disk (4 of 4 images), the one being written, and one per fetch worker
    assert 4 < fetched <= (downloader._FILE_BATCHES_WAITING + 1) * settings.download_write_batch + 4
    assert summary.downloaded == 40 and summary.failed == {}
    assert [blobs.get(sha256_hex(data), "jpeg") for data in images] == images
