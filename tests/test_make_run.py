"""`make run` smoke test: `python -m imagesearch.run` with the test model, a local folder and a URL list
served on 127.0.0.1 brings up the API and the UI; SIGINT (Ctrl-C) stops everything it started."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys

import httpx

from tests.support.browser import CHROMIUM, HEX12
from tests.support.cli import clean_env
from tests.support.search_api import ROOT, free_port, make_shapes, wait_for, write_folder


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class MakeRun:
    """`python -m imagesearch.run` with ``env``, its output in a log file; ``stop(sig)`` must end it
    with status 0 and both ports closed; ``output`` is what it printed (also after a failure)."""

    def __init__(self, tmp_path, env: dict[str, str], api_port: int, ui_port: int):
        self.api_port, self.ui_port, self.output = api_port, ui_port, ""
        self.log = (tmp_path / "run.log").open("w+")
        self.process = subprocess.Popen([sys.executable, "-m", "imagesearch.run"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def __enter__(self) -> MakeRun:
        return self

    def stop(self, sig: int) -> None:
        self.process.send_signal(sig)
        assert self.process.wait(60) == 0
        assert not _listening(self.api_port) and not _listening(self.ui_port)

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.seek(0)
        self.output = self.log.read()
        self.log.close()


def ui_search(ui_url: str, query: str, embedded: int) -> list[str]:
    """The UI in Chromium: its sidebar must show ``embedded`` images embedded; then ``query`` typed in
    its search box; the id prefixes of the results shown, in order. Generous timeouts: the first page
    runs the UI's script cold, on a loaded machine."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            page.goto(ui_url)
            expect(page.get_by_test_id("stSidebar")).to_contain_text(f"{embedded} embedded", timeout=90_000)
            box = page.get_by_label("Describe what you are looking for")
            box.fill(query)
            box.press("Enter")
            page.wait_for_function(  # the results: at least two captions that are id prefixes
                "() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                ".filter(e => /^[0-9a-f]{12}$/.test(e.innerText.trim())).length >= 2")
            page.locator("[data-testid=stImage] img").first.wait_for()
            captions = page.get_by_test_id("stCaptionContainer").all_inner_texts()
            return [t.strip() for t in captions if HEX12.match(t.strip())]
        finally:
            browser.close()


def test_make_run_serves_api_and_ui_until_ctrl_c(tmp_path, test_model_repo, image_server):
    folder_images = make_shapes(1, seed=4)
    folder = write_folder(tmp_path / "images", folder_images)
    url_image = make_shapes(1, seed=5, classes=[("green", "square")])[0]
    url = image_server.add("/g.jpg", url_image.data)
    (tmp_path / "urls.txt").write_text(f"{url}\ta green square\n")
    ids = {hashlib.sha256(i.data).hexdigest(): (i.colour, i.shape) for i in [*folder_images, url_image]}
    url_id = hashlib.sha256(url_image.data).hexdigest()
    api_port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "IMAGESEARCH_DATA_DIR": str(tmp_path / "var"),
        "IMAGESEARCH_MODEL_REPOSITORY": str(test_model_repo),
        "IMAGESEARCH_MODEL": "shapes-tiny",  # already exported: nothing to export
        "IMAGESEARCH_URLS_FILE": str(tmp_path / "urls.txt"),
        "IMAGESEARCH_IMAGES_FOLDER": str(folder),
        "IMAGESEARCH_ALLOW_PRIVATE_NETWORKS": "true",  # the URL list points at 127.0.0.1
        "IMAGESEARCH_API_PORT": str(api_port),
        "IMAGESEARCH_UI_PORT": str(ui_port),
        "IMAGESEARCH_DECODE_WORKERS": "1",
    }
    with MakeRun(tmp_path, env, api_port, ui_port) as run:
        process = run.process
        wait_for(f"http://127.0.0.1:{api_port}/healthz", timeout=240, process=process)
        body = httpx.get(f"http://127.0.0.1:{api_port}/search", params={"q": "a green square", "k": 13}).json()
        results = body["results"]
        assert {r["id"] for r in results} == set(ids) and len(results) == 13  # 12 folder images + 1 from the URL list
        assert [ids[r["id"]] for r in results[:2]] == [("green", "square")] * 2  # the folder's and the URL's
        from_url = next(r for r in results if r["id"] == url_id)
        assert (from_url["url"], from_url["captions"], from_url["sources"]) == (url, ["a green square"], ["url"])
        wait_for(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=120, process=process)
        # Streamlit serves the same empty HTML shell for any script: only the page as a browser
        # renders it shows the UI working: the API's counts, and its search box answering.
        greens = {i[:12] for i, cls in ids.items() if cls == ("green", "square")}
        shown = ui_search(f"http://127.0.0.1:{ui_port}", "a green square", embedded=13)
        assert set(shown[:2]) == greens and len(greens) == 2, (shown, greens)

        run.stop(signal.SIGINT)
    assert "[make run] stopping" in run.output, run.output
    assert "stored 12" in run.output and re.search(r"\bembed: 13 embedded\b", run.output), run.output


def test_make_run_exports_a_missing_model_then_stops_on_sigterm(tmp_path, test_model_repo):
    """No model in the repository: `make run` exports it first (here the test model's architecture
    and trained checkpoint, as a user would point it at a local checkpoint), then ingests and serves;
    SIGTERM (`kill`, a service manager) stops everything like Ctrl-C."""
    trained = test_model_repo.parent  # the test model's checkpoint and open_clip config live here
    folder = write_folder(tmp_path / "images", make_shapes(1, seed=6))
    api_port, ui_port = free_port(), free_port()
    env = clean_env(
        IMAGESEARCH_DATA_DIR=str(tmp_path / "var"), IMAGESEARCH_MODEL_REPOSITORY=str(tmp_path / "models"),
        IMAGESEARCH_ARCH="shapes-tiny", IMAGESEARCH_PRETRAINED=str(trained / "checkpoint.pt"),
        IMAGESEARCH_ARCH_CONFIG=str(trained / "config"), IMAGESEARCH_URLS_FILE=str(tmp_path / "no-urls.txt"),
        IMAGESEARCH_IMAGES_FOLDER=str(folder), IMAGESEARCH_API_PORT=str(api_port), IMAGESEARCH_UI_PORT=str(ui_port),
        IMAGESEARCH_DECODE_WORKERS="1")
    with MakeRun(tmp_path, env, api_port, ui_port) as run:
        process = run.process
        wait_for(f"http://127.0.0.1:{api_port}/healthz", timeout=300, process=process)
        cards = list((tmp_path / "models").glob("*.json"))
        slug = next(c.stem for c in cards if not c.name.endswith(".tokenizer.json"))
        status = httpx.get(f"http://127.0.0.1:{api_port}/status", timeout=30).json()
        assert status["model"]["slug"] == slug and status["model"]["architecture"] == "shapes-tiny"
        assert status["counts"]["embedded"] == 12
        wait_for(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=120, process=process)

        run.stop(signal.SIGTERM)
    assert f"model {slug} in {tmp_path / 'models'}" in run.output and "[make run] stopping" in run.output, run.output
