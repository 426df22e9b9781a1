"""The cap on request bodies holds for bodies of unknown length (``Transfer-Encoding: chunked``), JSON
and multipart, with a key, without one, and on an API without keys: the API answers as soon as the
cap is passed and stops reading, its memory does not grow by the body and nothing of it goes to disk.

The API runs as a process of its own (``imagesearch serve``), so that its memory and its writes are
its alone: the peak resident memory (VmHWM, reset before each request) from /proc/<pid>/status, the
bytes it wrote (wchar) from /proc/<pid>/io.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from imagesearch.api.body_limit import BODY_SLACK
from imagesearch.config import Settings
from tests.support.chunked import post_chunked
from tests.support.cli import cli_env, start_cli
from tests.support.net import free_port, wait_until
from tests.support.search_api import ingest, make_shapes, write_folder

KEY = "body-key-8e21"
CAP = 2 * 1024 * 1024  # over the 1 MiB a multipart parser keeps in memory before it spools to disk
BODY = 256 * 1024 * 1024  # what the client offers: far over the cap
CHUNK = b"a" * 65536
JSON_START = b'{"text": "'
BOUNDARY = "imagesearch-test-boundary"
MULTIPART_START = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
                   "Content-Type: image/jpeg\r\n\r\n").encode()
MULTIPART_END = f"\r\n--{BOUNDARY}--\r\n".encode()
BODIES = {  # what is posted where: (path, content type, the start and the end around the chunks)
    "json": ("/search", "application/json", JSON_START, b'", "k": 2}'),
    "multipart": ("/search/image", f"multipart/form-data; boundary={BOUNDARY}", MULTIPART_START, MULTIPART_END),
}


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    tmp: Path  # the API's TMPDIR
    keys: bool
    image: bytes  # an image to upload

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes, and wchar: bytes written (files, sockets, pipes)."""
        found = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "wchar":
                found[name] = int(value)
        return found

    def temporary(self) -> set[Path]:
        """Everything in the API's temporary folder (which its libraries use too)."""
        return set(self.tmp.rglob("*"))

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


@pytest.fixture(scope="module", params=["keys", "no keys"])
def served(request, tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("body")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny")
    images = make_shapes(1, seed=53)
    ingest(settings, "--folder", str(write_folder(root / "photos", images)))
    (root / "tmp").mkdir()
    port, keys = free_port(), request.param == "keys"
    env = cli_env(settings.data_dir, test_model_repo, IMAGESEARCH_MAX_UPLOAD_BYTES=str(CAP), TMPDIR=str(root / "tmp"),
                  IMAGESEARCH_API_KEYS=KEY if keys else "", IMAGESEARCH_SEARCH_RATE_PER_S="0", IMAGESEARCH_UPLOAD_RATE_PER_S="0")
    process = start_cli("serve", "--port", str(port), "--log-level", "warning", env=env)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200, 120, "the API",
                   process=process, log_tail=lambda: process.stdout.read() if process.poll() is not None else "")
        yield Served(process, port, root / "tmp", keys, images[0].data)
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("with_key", [True, False], ids=["with a key", "without a key"])
def test_a_chunked_body_far_over_the_cap_is_refused_as_it_arrives(served, body, with_key):
    path, content_type, start, end = BODIES[body]
    headers = {"Content-Type": content_type, **({"X-API-Key": KEY} if with_key else {})}
    served.reset_peak()
    before, temporary = served.status(), served.temporary()
    answer = post_chunked(served.port, path, CHUNK, BODY, headers, prefix=start, suffix=end)
    after = served.status()

    if served.keys and not with_key:  # refused before a byte of the body is read
        assert answer.status == 401 and b'"unauthorized"' in answer.body, answer
    else:
        assert answer.status == 413, answer
        assert answer.headers["content-type"] == "application/json"
        assert answer.body == f'{{"error":"too_large","detail":"the request body is over {CAP} bytes"}}'.encode()
    assert answer.sent < BODY // 8, answer.sent  # the API stopped taking the body (the rest: socket buffers)
    grown = after["VmHWM"] - before["VmRSS"]
    assert grown < 64 * 1024 * 1024, f"the API's peak memory grew by {grown >> 20} MiB"
    # a temporary file leaves no name in the folder (O_TMPFILE), but its bytes are written: count them
    written = after["wchar"] - before["wchar"]
    assert written < CAP + BODY_SLACK + 1024 * 1024, f"the API wrote {written >> 20} MiB"
    assert served.temporary() == temporary


def test_chunked_bodies_under_the_cap_are_read_whole(served):
    key = {"X-API-Key": KEY} if served.keys else {}
    path, content_type, start, end = BODIES["json"]
    json_search = post_chunked(served.port, path, b"a red circle", 12, {"Content-Type": content_type, **key},
                               prefix=start, suffix=end)
    assert json_search.status == 200 and b'"results"' in json_search.body, json_search
    path, content_type, start, end = BODIES["multipart"]
    image_search = post_chunked(served.port, path, served.image, len(served.image), {"Content-Type": content_type, **key},
                                prefix=start, suffix=end)
    assert image_search.status == 200 and b'"results"' in image_search.body, image_search
