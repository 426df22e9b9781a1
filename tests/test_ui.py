"""The web UI in a real browser: Debian's Chromium driven by Playwright, against the real Streamlit
UI talking to the real API (test model, shape images ingested by `imagesearch ingest`)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from playwright.sync_api import Page, expect

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from tests.support import shapes
from tests.support.browser import TIMEOUT_MS
from tests.support.cli import clean_env
from tests.support.image_server import ImageServer
from tests.support.search_api import ROOT, ApiThread, free_port, ingest, make_shapes, wait_for, write_folder

PER_CLASS = 4  # = the k the text search test picks: k images of one class exist
UI_KEY = "ui-key-4c2e"
# The README's picture of the product: this test's page, written there when this variable is 1.
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "ui-search.png"
UPDATE_DOCS_SCREENSHOT = "IMAGESEARCH_UPDATE_DOCS_SCREENSHOT"


def start_ui(api_url: str, api_key: str = "") -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "imagesearch.cli", "ui", "--host", "127.0.0.1", "--port", str(port), "--api-url", api_url],
        cwd=ROOT, env=clean_env(IMAGESEARCH_API_URL=api_url, IMAGESEARCH_API_KEY=api_key),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/_stcore/health", timeout=120, process=process)
    except Exception as exc:
        process.kill()
        raise RuntimeError(f"streamlit did not start: {process.communicate()[1].decode()[-2000:]}") from exc
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("ui")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny",
                        allow_private_networks=True, api_keys=UI_KEY)  # the API asks for keys; the UI sends its own
    images = make_shapes(PER_CLASS, seed=3)
    ingest(settings, "--folder", str(write_folder(root / "folder", images)))
    # one image from a URL list, with its caption: the page shows both and links to the source
    from_url = make_shapes(1, seed=4, classes=[("green", "circle")])[0]
    with ImageServer() as server:
        url = server.add("/green-circle.jpg", from_url.data)
        (root / "urls.txt").write_text(f"{url}\tthe green circle from the web\n")
        ingest(settings, "--urls", str(root / "urls.txt"))
    classes = {hashlib.sha256(s.data).hexdigest(): (s.colour, s.shape) for s in [*images, from_url]}
    with ApiThread(create_app(settings)) as api:
        ui, ui_url = start_ui(api.url, UI_KEY)
        try:
            yield {"ui": ui_url, "api": api.url, "classes": classes, "images": images, "from_url": (from_url, url)}
        finally:
            stop(ui)


def result_ids(page: Page) -> list[str]:
    """The id prefixes shown under the result images, in order."""
    texts = page.get_by_test_id("stCaptionContainer").all_inner_texts()
    return [t.strip() for t in texts if re.fullmatch(r"[0-9a-f]{12}", t.strip())]


def shown_scores(page: Page) -> list[str]:
    """The scores on the result cards, in order (each card's line starts with its score, in bold)."""
    lines = page.get_by_test_id("stMarkdownContainer").all_inner_texts()
    return [m.group(1) for t in lines if (m := re.match(r"\s*(\d\.\d{3})\b", t))]


def shown_classes(page: Page, classes: dict, count: int, first: str | None = None) -> list[tuple[str, str]]:
    """The classes of the ``count`` result images on the page, once the page shows exactly that many
    (and ``first`` first): Streamlit replaces the previous results element by element."""
    by_prefix = {image_id[:12]: c for image_id, c in classes.items()}
    deadline, ids = time.monotonic() + TIMEOUT_MS / 1000, []
    while time.monotonic() < deadline:
        ids = result_ids(page)
        if len(ids) == count and (first is None or ids[0] == first) and not page.locator("[data-stale='true']").count():
            return [by_prefix[i] for i in ids]
        time.sleep(0.2)
    raise AssertionError(f"the page shows {ids}, expected {count} results" + (f" starting with {first}" if first else ""))


def search_text(page: Page, text: str) -> None:
    box = page.get_by_label("Describe what you are looking for")
    box.fill(text)
    box.press("Enter")


def test_text_search_shows_k_images_of_the_right_colour_and_shape(stack, page, artifacts_dir):
    # A caption whose top 4 in the API are all of its class (the tiny model confuses some shapes;
    # its accuracy is tested in test_api.py): the page must show exactly those 4 images.
    k, chosen = 4, None
    for colour, shape in shapes.CLASSES:
        results = httpx.get(f"{stack['api']}/search", params={"q": shapes.caption(colour, shape), "k": k},
                            headers={"X-API-Key": UI_KEY}).json()["results"]
        if all(stack["classes"][r["id"]] == (colour, shape) for r in results):
            chosen, expected = (colour, shape), [r["id"][:12] for r in results]
            break
    assert chosen, "the test model finds no class's 4 images as its top 4"

    page.goto(stack["ui"])
    expect(page.get_by_text("API healthy")).to_be_visible()
    expect(page.get_by_test_id("stMetricValue").first).to_have_text(str(PER_CLASS * 12 + 1))  # images in the sidebar
    page.get_by_test_id("stSelectbox").click()  # k selector
    page.get_by_role("option", name=str(k), exact=True).click()
    search_text(page, shapes.caption(*chosen))
    expect(page.get_by_text(f"{k} results in")).to_be_visible()
    expect(page.get_by_test_id("stImage")).to_have_count(k)
    assert shown_classes(page, stack["classes"], k) == [chosen] * k
    assert result_ids(page) == expected
    page.screenshot(path=str(artifacts_dir / "ui-text-search.png"), full_page=True)
    if os.environ.get(UPDATE_DOCS_SCREENSHOT) == "1":
        page.screenshot(path=str(DOCS_SCREENSHOT), full_page=True)


def test_upload_an_image_to_search_by_it(stack, page, tmp_path, artifacts_dir):
    example = next(s for s in stack["images"] if (s.colour, s.shape) == ("red", "triangle"))
    path = tmp_path / "example.jpg"
    path.write_bytes(example.data)  # the same bytes as an indexed image: it must come first, score 1
    page.goto(stack["ui"])
    page.locator("input[type=file]").set_input_files(str(path))
    expect(page.get_by_text("Similar to example.jpg")).to_be_visible()
    expect(page.get_by_test_id("stImage")).to_have_count(12)
    found = shown_classes(page, stack["classes"], 12, first=hashlib.sha256(example.data).hexdigest()[:12])
    assert found[0] == ("red", "triangle")
    # each card shows its own result's score: the API's answer to the same upload, in the same order
    answer = httpx.post(f"{stack['api']}/search/image", files={"file": ("example.jpg", example.data)}, data={"k": "12"},
                        headers={"Authorization": f"Bearer {UI_KEY}"}, timeout=60).json()
    assert answer["results"][0]["score"] > 0.999  # the same bytes: the image itself, first
    assert shown_scores(page) == [f"{r['score']:.3f}" for r in answer["results"]]
    page.screenshot(path=str(artifacts_dir / "ui-upload-search.png"), full_page=True)


def test_a_result_shows_its_caption_a_link_to_its_source_and_the_model(stack, page, tmp_path, artifacts_dir):
    image, url = stack["from_url"]
    path = tmp_path / "green.jpg"
    path.write_bytes(image.data)  # searching by the image itself puts it first
    page.goto(stack["ui"])
    expect(page.get_by_test_id("stSidebar").get_by_text("shapes-tiny")).to_be_visible()  # the model, in the sidebar
    page.locator("input[type=file]").set_input_files(str(path))
    expect(page.get_by_text("Similar to green.jpg")).to_be_visible()
    expect(page.get_by_text(re.compile(r"12 results in \d+ ms · model shapes-tiny"))).to_be_visible()
    shown_classes(page, stack["classes"], 12, first=hashlib.sha256(image.data).hexdigest()[:12])
    line = page.get_by_test_id("stMarkdownContainer").filter(has_text="the green circle from the web")
    expect(line).to_have_count(1)
    expect(line).to_contain_text("1.000")
    expect(line.get_by_role("link", name="source")).to_have_attribute("href", url)
    folder_line = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(r"_\d+\.jpg$")).first
    expect(folder_line).to_be_visible()
    expect(folder_line.get_by_role("link")).to_have_count(0)  # a folder file: its name, no link
    page.screenshot(path=str(artifacts_dir / "ui-caption-and-source.png"), full_page=True)


def test_matching_by_words_finds_the_captioned_image_only(stack, page, artifacts_dir):
    image, url = stack["from_url"]
    page.goto(stack["ui"])
    page.get_by_test_id("stRadio").get_by_text("words", exact=True).click()
    search_text(page, "from the web")  # words of one caption only (file names are colour_shape_N.jpg)
    expect(page.get_by_text("1 result in")).to_be_visible()
    named = hashlib.sha256(image.data).hexdigest()[:12]
    assert shown_classes(page, stack["classes"], 1, first=named) == [("green", "circle")]
    page.get_by_test_id("stRadio").get_by_text("both", exact=True).click()
    expect(page.get_by_text("12 results in")).to_be_visible()  # the vector part fills the rest
    shown_classes(page, stack["classes"], 12, first=named)
    page.screenshot(path=str(artifacts_dir / "ui-match-by-words.png"), full_page=True)


def test_more_like_this(stack, page, artifacts_dir):
    page.goto(stack["ui"])
    search_text(page, "a blue circle")
    expect(page.get_by_text("12 results in")).to_be_visible()
    shown_classes(page, stack["classes"], 12)
    second = result_ids(page)[1]  # not just the top hit
    page.get_by_role("button", name="More like this").nth(1).click()
    expect(page.get_by_text(f"Similar to {second}")).to_be_visible()
    found = shown_classes(page, stack["classes"], 12, first=second)  # itself first (score 1.0)
    colour = next(c for i, c in stack["classes"].items() if i.startswith(second))[0]
    assert [c for c, _ in found[:3]] == [colour] * 3, found
    page.screenshot(path=str(artifacts_dir / "ui-more-like-this.png"), full_page=True)


def test_api_down_is_said_plainly(page, artifacts_dir):
    ui, url = start_ui(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        page.goto(url)
        expect(page.get_by_text("is not reachable")).to_be_visible()
        assert "Traceback" not in page.content()
        page.screenshot(path=str(artifacts_dir / "ui-api-down.png"), full_page=True)
    finally:
        stop(ui)


def test_a_model_selector_when_the_api_serves_two_models(tmp_path, test_model_repo, blip2_repo, page, artifacts_dir):
    repository = tmp_path / "models"  # CLIP (the trained test model) and the tiny BLIP-2, side by side
    repository.mkdir()
    for source in (test_model_repo, blip2_repo):
        for entry in source.iterdir():
            (repository / entry.name).symlink_to(entry)
    settings = Settings(data_dir=tmp_path / "var", model_repository=repository, models="shapes-tiny,blip2-tiny")
    ingest(settings, "--folder", str(write_folder(tmp_path / "folder", make_shapes(1, seed=12))))
    with ApiThread(create_app(settings)) as api:
        expected = [r["id"][:12] for r in httpx.get(f"{api.url}/search", params={
            "q": "a red circle", "k": 8, "model": "blip2-tiny"}).json()["results"]]
        ui, url = start_ui(api.url)
        try:
            page.goto(url)
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_text("4 × 16-d per image · 12 embedded")).to_be_visible()  # BLIP-2's entry
            page.get_by_test_id("stSelectbox").filter(has_text="Model").click()
            page.get_by_role("option", name="blip2-tiny", exact=True).click()
            page.get_by_test_id("stSelectbox").filter(has_text="Results").click()
            page.get_by_role("option", name="8", exact=True).click()
            search_text(page, "a red circle")
            expect(page.get_by_text(re.compile(r"8 results in \d+ ms · model blip2-tiny"))).to_be_visible()
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while result_ids(page) != expected and time.monotonic() < deadline:
                time.sleep(0.2)
            assert result_ids(page) == expected  # BLIP-2's ranking, as the API gives it
            page.screenshot(path=str(artifacts_dir / "ui-model-selector.png"), full_page=True)
        finally:
            stop(ui)


def test_a_read_key_cannot_remove_and_is_told_why(stack, page, artifacts_dir):
    page.goto(stack["ui"])
    search_text(page, "a red square")
    expect(page.get_by_text("12 results in")).to_be_visible()
    shown_classes(page, stack["classes"], 12)
    victim = result_ids(page)[0]
    page.get_by_role("button", name="Details").first.click()
    expect(page.get_by_text("Came from")).to_be_visible()
    page.get_by_role("button", name="Remove").click()
    page.get_by_role("button", name="Remove for good").click()
    expect(page.get_by_text("Removing an image needs an admin key")).to_be_visible()  # the UI's key is a read key
    page.screenshot(path=str(artifacts_dir / "ui-remove-refused.png"), full_page=True)
    full = next(i for i in stack["classes"] if i.startswith(victim))
    assert httpx.get(f"{stack['api']}/images/{full}", headers={"X-API-Key": UI_KEY}).status_code == 200
