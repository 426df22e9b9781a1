"""imagesearch.fetch against a real HTTP server on 127.0.0.1: politeness, retries, limits, the SSRF guard."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import time

import pytest
from yarl import URL

from imagesearch.config import Settings
from imagesearch.fetch import FetchError, FetchOptions, check_url, fetch_image, fetch_image_sync, make_client
from tests.support.image_server import Reply
from tests.support.shapes import draw_shape

RNG = random.Random(3)
JPEG = draw_shape("red", "circle", RNG, (80, 60)).encode("JPEG")
PNG = draw_shape("blue", "square", RNG, (40, 50)).encode("PNG")

# Fast settings for tests: tiny backoff, short timeouts; 127.0.0.1 allowed (the test server).
FAST = FetchOptions(connect_timeout_s=2, read_timeout_s=0.5, total_timeout_s=5, retries=2,
                    backoff_s=0.01, backoff_max_s=0.05, allow_private_networks=True)
GUARDED = dataclasses.replace(FAST, allow_private_networks=False)


def fetch(url: str, options: FetchOptions = FAST):
    async def run():
        async with make_client(options) as client:
            return await fetch_image(client, url, options)

    return asyncio.run(run())


def fetch_error(url: str, options: FetchOptions = FAST) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, options)
    return info.value


def test_fetches_an_image_with_a_user_agent_naming_the_project(image_server):
    url = image_server.add("/red.jpg", JPEG)
    image = fetch(url)
    assert image.data == JPEG
    assert (image.info.width, image.info.height, image.info.format) == (80, 60, "jpeg")
    assert image.final_url == url and image.attempts == 1
    agent = image_server.user_agents[-1]
    assert agent.startswith("imagesearch/") and "https://github.com/imagesearch/imagesearch" in agent


def test_content_type_does_not_matter_only_decoding(image_server):
    image = fetch(image_server.add("/square", PNG, content_type="application/octet-stream"))
    assert (image.info.format, image.info.width, image.info.height) == ("png", 40, 50)


def test_settings_give_the_options():
    options = FetchOptions.from_settings(Settings(download_max_bytes=123, download_retries=7,
                                                  download_allowed_networks=["10.0.0.0/8"]))
    assert (options.max_bytes, options.retries, options.allowed_networks) == (123, 7, ("10.0.0.0/8",))
    assert options.max_redirects == 5 and options.honour_noai and not options.allow_private_networks
    assert FetchOptions.from_settings(Settings()).max_bytes == 25 * 1024 * 1024
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        Settings(download_allowed_networks=["10.0.0.0/33"])


def test_404_fails_at_once_without_retry(image_server):
    error = fetch_error(image_server.url("/missing.jpg"))
    assert (error.reason, error.detail, error.attempts) == ("http_status", "HTTP 404", 1)
    assert image_server.hits["/missing.jpg"] == 1


def test_500_then_200_is_retried(image_server):
    url = image_server.add_sequence("/flaky.jpg", [Reply(500, b"oops", "text/plain"), Reply(200, JPEG)])
    image = fetch(url)
    assert image.data == JPEG and image.attempts == 2
    assert image_server.hits["/flaky.jpg"] == 2


def test_persistent_503_gives_up_after_the_retries(image_server):
    url = image_server.add("/down.jpg", b"", "text/plain", status=503)
    error = fetch_error(url)
    assert (error.reason, error.detail, error.attempts) == ("http_status", "HTTP 503", 3)
    assert image_server.hits["/down.jpg"] == 3


def test_429_waits_for_retry_after(image_server):
    url = image_server.add_sequence("/busy.jpg", [Reply(429, b"", "text/plain", {"Retry-After": "1"}), Reply(200, JPEG)])
    started = time.monotonic()
    image = fetch(url)
    # the backoff alone would wait ~0.02 s: the wait of at least 1 s comes from Retry-After
    assert time.monotonic() - started >= 0.95
    assert image.data == JPEG and image.attempts == 2


def test_retry_after_as_an_http_date(image_server):
    from email.utils import formatdate

    retry_at = int(time.time()) + 3  # an HTTP date has whole seconds: 2 to 3 s from now
    url = image_server.add_sequence("/busy-until.jpg", [Reply(503, b"", "text/plain",
                                                               {"Retry-After": formatdate(retry_at, usegmt=True)}),
                                                         Reply(200, JPEG)])
    wall, mono = time.time(), time.monotonic()  # the server notes its requests' monotonic times
    image = fetch(url)
    assert image.data == JPEG and image.attempts == 2
    second = max(t for t, path in image_server.started if path == "/busy-until.jpg")
    # asked again at the date, not after the backoff (a hundredth of a second): a loaded machine can
    # only make the second request later
    assert wall + (second - mono) >= retry_at - 0.05


def test_too_long_retry_after_gives_up_at_once(image_server):
    url = image_server.add("/later.jpg", b"", "text/plain", {"Retry-After": "3600"}, status=429)
    error = fetch_error(url)
    assert error.reason == "http_status" and "429" in error.detail and error.attempts == 1


def test_slow_body_past_the_read_timeout(image_server):
    url = image_server.add_sequence("/slow.jpg", [Reply(200, JPEG, body_delay_s=2.0)])
    error = fetch_error(url, dataclasses.replace(FAST, retries=1))
    assert (error.reason, error.attempts) == ("timeout", 2)
    assert image_server.hits["/slow.jpg"] == 2


def test_a_host_that_never_accepts_the_connection_hits_the_connect_timeout():
    """A listening socket whose accept queue is full: the kernel drops further SYNs, so the
    connection hangs, as with a firewalled host, until the connect timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    for _ in range(3):  # fill the accept queue
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        queued.append(client)
    try:
        started = time.monotonic()
        error = fetch_error(f"http://127.0.0.1:{port}/photo.jpg",
                            dataclasses.replace(FAST, connect_timeout_s=0.5, read_timeout_s=30, total_timeout_s=30, retries=1))
        took = time.monotonic() - started
    finally:
        for sock in [server, *queued]:
            sock.close()
    assert (error.reason, error.attempts) == ("timeout", 2) and "ConnectionTimeout" in error.detail
    assert 1.0 <= took < 10  # two attempts of 0.5 s, not the 30 s read or total timeout


def test_total_timeout_bounds_an_attempt(image_server):
    url = image_server.add_sequence("/slow.jpg", [Reply(200, JPEG, body_delay_s=2.0)])
    error = fetch_error(url, dataclasses.replace(FAST, read_timeout_s=10, total_timeout_s=0.3, retries=0))
    assert (error.reason, error.attempts) == ("timeout", 1)


def test_slow_then_fast_succeeds_on_retry(image_server):
    url = image_server.add_sequence("/slow-once.jpg", [Reply(200, JPEG, body_delay_s=2.0), Reply(200, JPEG)])
    image = fetch(url)
    assert image.data == JPEG and image.attempts == 2


def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/x.jpg")
    assert (error.reason, error.attempts) == ("connection", 3)


def test_size_cap_from_content_length(image_server):
    url = image_server.add("/big.jpg", JPEG)
    error = fetch_error(url, dataclasses.replace(FAST, max_bytes=len(JPEG) - 1))
    assert error.reason == "too_large" and "Content-Length" in error.detail
    assert fetch(url, dataclasses.replace(FAST, max_bytes=len(JPEG))).data == JPEG


def test_size_cap_enforced_while_streaming(image_server):
    # ~64 GB announced by nothing (chunked): only stopping mid-stream can end this test
    url = image_server.add_sequence("/endless", [Reply(200, b"\xff" * 65536, repeat=1_000_000)])
    error = fetch_error(url, dataclasses.replace(FAST, max_bytes=1_000_000, total_timeout_s=30))
    assert error.reason == "too_large" and error.attempts == 1


def test_html_served_as_jpeg_is_not_an_image(image_server):
    url = image_server.add("/page.jpg", b"<!doctype html><html><body>hello</body></html>", "image/jpeg")
    error = fetch_error(url)
    assert error.reason == "not_an_image" and error.attempts == 1


def test_truncated_jpeg_is_not_an_image(image_server):
    big = draw_shape("green", "triangle", RNG, (300, 300)).encode("JPEG")
    error = fetch_error(image_server.add("/cut.jpg", big[: len(big) // 2]))
    assert error.reason == "not_an_image" and "truncated" in error.detail


def test_redirects_are_followed(image_server):
    image_server.add("/final.jpg", JPEG)
    image_server.add_redirect("/hop2", "/final.jpg", status=301)
    url = image_server.add_redirect("/hop1", image_server.url("/hop2"), status=307)
    image = fetch(url)
    assert image.data == JPEG and image.final_url == image_server.url("/final.jpg")


def test_at_most_five_redirects(image_server):
    image_server.add("/r5", JPEG)
    for i in range(5):
        image_server.add_redirect(f"/r{i}", f"/r{i + 1}")
    assert fetch(image_server.url("/r0")).data == JPEG  # exactly 5 redirects
    image_server.add_redirect("/r-extra", "/r0")
    error = fetch_error(image_server.url("/r-extra"))  # 6 redirects
    assert error.reason == "too_many_redirects" and error.attempts == 1


def test_redirect_loop(image_server):
    image_server.add_redirect("/a", "/b")
    image_server.add_redirect("/b", "/a")
    error = fetch_error(image_server.url("/a"))
    assert error.reason == "too_many_redirects"
    assert image_server.hits["/a"] + image_server.hits["/b"] == 6


@pytest.mark.parametrize("header", ["noai", "noindex, noimageai", "imagesearch: noai", "*: NoAI"])
def test_noai_header_is_honoured(image_server, header):
    url = image_server.add("/private.jpg", JPEG, headers={"X-Robots-Tag": header})
    error = fetch_error(url)
    assert error.reason == "robots" and error.attempts == 1
    assert fetch(url, dataclasses.replace(FAST, honour_noai=False)).data == JPEG


@pytest.mark.parametrize("header", ["noindex", "otherbot: noai", "nofollow, noarchive"])
def test_other_robots_directives_do_not_block(image_server, header):
    assert fetch(image_server.add("/ok.jpg", JPEG, headers={"X-Robots-Tag": header})).data == JPEG


# --- the SSRF guard ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "100.64.0.1", "255.255.255.255", "[::1]", "[::]", "[fe80::1]", "[fc00::1]",
    "[ff02::1]", "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]", "2130706433", "0x7f000001", "localhost",
])
def test_guard_refuses_non_public_addresses(host):
    error = fetch_error(f"http://{host}:9/x.jpg", GUARDED)
    assert error.reason == "blocked", error
    assert error.attempts == 1


# Every kind of special-purpose address in IANA's registries, in the spellings a URL can give it. Each
# is refused by the guard itself ("blocked", nothing sent), never left to the network to refuse.
SPECIAL_PURPOSE_HOSTS = [
    # IPv4
    "0.1.2.3", "100.64.0.1", "100.127.255.254", "192.0.0.1", "192.0.0.170", "192.0.2.1", "198.51.100.7",
    "203.0.113.9", "198.18.0.1", "198.19.255.254", "192.88.99.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    # IPv6 carrying an IPv4 address: judged by it
    "[2002:7f00:1::]", "[2002:a00:1::1]", "[2002:a9fe:a9fe::]", "[2002:c000:201::]",  # 6to4 of 127.0.0.1, 10.0.0.1, ...
    "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b::10.1.2.3]",  # NAT64 well-known prefix
    "[::ffff:a9fe:a9fe]", "[::ffff:100.64.0.1]",  # IPv4-mapped
    "[::127.0.0.1]", "[::8.8.8.8]",  # IPv4-compatible (deprecated: refused whatever it carries)
    # IPv6
    "[64:ff9b:1::808:808]",  # NAT64 local use
    "[2001::1]", "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo: its client IPv4 is obfuscated
    "[2001:2::1]", "[2001:10::1]", "[2001:20::1]",  # benchmarking, ORCHID, ORCHIDv2
    "[2001:db8::1]", "[3fff::1]",  # documentation
    "[fec0::1]", "[fc00::1]", "[fd12:3456:789a::1]", "[fe80::1]", "[fe80::1%25eth0]",  # site-local, unique local, link-local
    "[ff02::1]", "[ff0e::1]", "[100::1]", "[5f00::1]", "[4000::1]", "[::]", "[::1]",
    # IPv4 in the forms the system resolver accepts (inet_aton)
    "0177.0.0.1", "127.1", "0x7f.1", "0x7F.0.0.1", "017700000001", "10.1", "0xa9.254.169.254",
]


@pytest.mark.parametrize("host", SPECIAL_PURPOSE_HOSTS)
def test_guard_refuses_every_special_purpose_address(host, image_server):
    """On the test server's port: a spelling of 127.0.0.1 that got through would be answered."""
    url = image_server.add("/red.jpg", JPEG).replace("127.0.0.1", host)
    error = fetch_error(url, GUARDED)
    assert (error.reason, error.attempts) == ("blocked", 1), error
    assert image_server.hits["/red.jpg"] == 0


@pytest.mark.parametrize("host", ["0177.0.0.1", "127.1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"])
def test_the_allow_list_judges_the_address_not_its_spelling(host):
    assert check_url(URL(f"http://{host}/x.jpg"), dataclasses.replace(GUARDED, allowed_networks=("127.0.0.0/8",))) is None


def test_an_ipv4_mapped_spelling_of_an_allowed_address_is_allowed(image_server):
    """The allow-list (``download_allowed_networks``) judges the address, not its spelling."""
    url = image_server.add("/red.jpg", JPEG).replace("127.0.0.1", "[::ffff:127.0.0.1]")
    assert fetch(url, dataclasses.replace(GUARDED, allowed_networks=("127.0.0.0/8",))).data == JPEG
    assert image_server.hits["/red.jpg"] == 1


def test_the_allow_list_opens_special_purpose_ranges_of_both_families():
    options = dataclasses.replace(GUARDED, allowed_networks=("10.0.0.0/8", "fd00::/8", "2002:a00::/24"))
    for url in ["http://10.1.2.3/x.jpg", "http://[fd00::5]/x.jpg", "http://[::ffff:10.0.0.1]/x.jpg",
                "http://[2002:a00:1::]/x.jpg", "http://[64:ff9b::10.0.0.1]/x.jpg"]:
        assert check_url(URL(url), options) is None, url
    for url in ["http://192.168.0.1/x.jpg", "http://[fc00::1]/x.jpg", "http://[2002:c0a8:1::]/x.jpg"]:
        with pytest.raises(FetchError):
            check_url(URL(url), options)


@pytest.mark.parametrize("url", ["ftp://example.com/x.jpg", "file:///etc/passwd", "gopher://example.com/"])
def test_guard_refuses_other_schemes(url):
    assert fetch_error(url, GUARDED).reason == "blocked"


@pytest.mark.parametrize("url", ["not a url", "http://", "http://exa mple.com/x.jpg", "http://[::1/x"])
def test_malformed_urls(url):
    assert fetch_error(url, GUARDED).reason == "invalid_url"


@pytest.mark.parametrize("url", ["http://93.184.215.14/x.jpg", "https://[2606:4700::6810:85e5]/x.jpg",
                                 "http://8.8.8.8:8080/", "http://[2002:808:808::1]/x.jpg",  # 6to4 of 8.8.8.8
                                 "http://[64:ff9b::8.8.8.8]/x.jpg", "http://[::ffff:8.8.8.8]/x.jpg",
                                 "http://134744072/x.jpg", "http://8.8.2056/x.jpg"])  # 8.8.8.8 spelled as resolvers read it
def test_guard_passes_public_addresses(url):
    assert check_url(URL(url), GUARDED) is None  # no FetchError: let through


def test_guard_refuses_the_test_server_itself(image_server):
    url = image_server.add("/red.jpg", JPEG)
    assert fetch_error(url, GUARDED).reason == "blocked"
    assert fetch_error(url.replace("127.0.0.1", "localhost"), GUARDED).reason == "blocked"
    assert image_server.hits["/red.jpg"] == 0  # refused before any request was sent


def test_guard_checks_every_redirect(image_server):
    # the guard is on, with only the test server's address let through
    options = dataclasses.replace(GUARDED, allowed_networks=("127.0.0.1/32",))
    assert fetch(image_server.add("/red.jpg", JPEG), options).data == JPEG
    for target in ["http://169.254.169.254/latest/meta-data/", f"http://[::1]:{image_server.port}/red.jpg",
                   "http://10.0.0.7/x.jpg", "file:///etc/passwd"]:
        url = image_server.add_redirect("/jump", target)
        error = fetch_error(url, options)
        assert error.reason == "blocked", (target, error)


def test_a_host_name_is_checked_on_the_addresses_it_connects_to(image_server, monkeypatch):
    """DNS rebinding: a name that resolves to a public address when looked up once and to 127.0.0.1
    (the test server) the next time. The guard checks a name's addresses inside the client's own DNS
    step, so there is one lookup per connection and the checked address is the one connected to:
    the fetch is refused on 127.0.0.1 before connecting, or connects to the public answer; it can
    never check one answer and connect to the other. With 127.0.0.0/8 allowed it fetches."""
    url = image_server.add("/red.jpg", JPEG).replace("127.0.0.1", "rebind.test")
    real_getaddrinfo, answers = socket.getaddrinfo, []

    def rebinding_dns(host, port, *args, **kwargs):  # only the name lookup is faked, not the guard
        if (host.decode() if isinstance(host, bytes) else host) != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "93.184.215.14")  # TTL 0: the next answer differs
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answers[-1], port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    error = fetch_error(url, GUARDED)
    assert error.reason == "blocked" and "rebind.test resolves to non-public address 127.0.0.1" in error.detail, error
    assert answers == ["127.0.0.1"] and error.attempts == 1  # one lookup, refused, not retried
    assert image_server.hits["/red.jpg"] == 0  # refused before connecting

    answers.clear()
    assert fetch(url, dataclasses.replace(GUARDED, allowed_networks=("127.0.0.0/8",))).data == JPEG
    assert answers == ["127.0.0.1"] and image_server.hits["/red.jpg"] == 1


def fake_dns(monkeypatch, names: dict[str, list[str]]) -> list[str]:
    """The system resolver, except that each of ``names`` answers its addresses (all of them, in
    order); returns the names looked up. Only the lookup is faked: the guard and the connection are real."""
    real_getaddrinfo, asked = socket.getaddrinfo, []

    def getaddrinfo(host, port, *args, **kwargs):
        host = host.decode() if isinstance(host, bytes) else host
        if host not in names:
            return real_getaddrinfo(host, port, *args, **kwargs)
        asked.append(host)
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0)) if ":" in address
                else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
                for address in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize("answers", [["127.0.0.1", "10.0.0.1"], ["192.168.7.7", "127.0.0.1"],
                                     ["127.0.0.1", "2002:a00:1::"], ["127.0.0.1", "fec0::1"], ["127.0.0.1", "64:ff9b::a00:1"]])
def test_a_name_with_one_non_public_address_among_several_is_refused(image_server, monkeypatch, answers):
    """127.0.0.1 (the test server, on the allow-list) stands for a public address: the name also
    answers a non-public one, so it is refused whatever the order, before any connection."""
    options = dataclasses.replace(GUARDED, allowed_networks=("127.0.0.1/32",))
    asked = fake_dns(monkeypatch, {"mixed.test": answers, "fine.test": ["127.0.0.1"]})
    error = fetch_error(image_server.add("/red.jpg", JPEG).replace("127.0.0.1", "mixed.test"), options)
    assert error.reason == "blocked" and "mixed.test resolves to non-public address" in error.detail, error
    assert image_server.hits["/red.jpg"] == 0 and asked == ["mixed.test"]
    assert fetch(image_server.url("/red.jpg").replace("127.0.0.1", "fine.test"), options).data == JPEG


def test_a_robots_txt_redirected_to_a_private_address_is_not_fetched(image_server, monkeypatch):
    """robots.txt of a public-looking host (a name on the allow-listed test server) redirects to
    another server on a private address: the robots.txt fetch goes through the same guard, so the
    private server never sees a request; the origin then counts as having no robots.txt."""
    from imagesearch.robots import RobotsRules
    from tests.support.image_server import ImageServer

    fake_dns(monkeypatch, {"images.example": ["127.0.0.1"]})
    options = dataclasses.replace(GUARDED, allowed_networks=("127.0.0.1/32",))
    with ImageServer(host="127.0.0.2") as private:
        private.add("/robots.txt", b"User-agent: *\nDisallow: /\n", "text/plain")
        image_server.add_redirect("/robots.txt", private.url("/robots.txt"))
        origin = f"http://images.example:{image_server.port}"

        async def verdict():
            async with make_client(options) as client:
                return await RobotsRules(client, options).check(f"{origin}/red.jpg")

        assert asyncio.run(verdict()).allowed
        assert image_server.hits["/robots.txt"] == 1 and private.hits["/robots.txt"] == 0
        # the same redirect with the private server allowed: it is asked, and its rules apply
        opened = dataclasses.replace(options, allowed_networks=("127.0.0.0/30",))

        async def opened_verdict():
            async with make_client(opened) as client:
                return await RobotsRules(client, opened).check(f"{origin}/red.jpg")

        assert not asyncio.run(opened_verdict()).allowed and private.hits["/robots.txt"] == 1


def test_sync_wrapper(image_server):
    image = fetch_image_sync(image_server.add("/red.jpg", JPEG), FAST)
    assert image.data == JPEG
    with pytest.raises(FetchError) as info:
        fetch_image_sync(image_server.url("/missing"), FAST)
    assert info.value.reason == "http_status"
