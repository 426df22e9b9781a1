"""The web UI's everyday features in Chromium against the real API and real ingested images: hostile
captions and URLs shown as text, thumbnails only in the grid (bytes measured in the browser), "Load
more", the sidebar's filters and sort, 👍 / 👎 feedback, the details view with Remove (an admin key)
and the near-duplicates page. Each compares the page with what the API answers for the same request."""

from __future__ import annotations

import hashlib
import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.ui.markup import WORD_JOINER
from tests.support import photos
from tests.support.browser import TIMEOUT_MS
from tests.support.image_server import ImageServer
from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder
from tests.test_ui import result_ids, search_text, start_ui, stop

READ, ADMIN = "ui-read-key-1a2b", "ui-admin-key-3c4d"
BIG = 50  # large photos-like images: more than one 48-result page of them
PAGE_BUDGET = 2_000_000  # bytes a page of 48 thumbnails may move
HOSTILE_HOSTS = ("tracker.example", "phish.example")
HOSTILE_CAPTIONS = [
    "hostile ![](https://tracker.example/p.png) a photo",
    'hostile <img src=x onerror="document.title=\'pwned\'"> raw html',
    "hostile [click me](https://phish.example/x) and $e^{x}$ math",
    "hostile see https://phish.example/bare or www.phish.example",
]
BREAKOUT_PATH = "/shot.jpg?a=)![](https://tracker.example/q.png)[evil](https://phish.example/y)"


def big_image(seed: int) -> bytes:
    """About 1.3 MB of JPEG: a smooth colour field under strong pixel noise, which JPEG cannot
    compress, at 1400x1050 (a thumbnail of it averages the noise away, as of a real photo's grain)."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((1400, 1050), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-64, 65, (1050, 1400, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def exif_photos() -> list[tuple[str, bytes]]:
    """Photos taken in 2021 with a Canon and in 2023 with an iPhone, one a day apart each."""
    made = []
    for n in range(3):
        made.append((f"canon_{n}.jpg", photos.photo(photos.Exif(taken=f"2021:05:0{n + 1} 10:00:00", make="Canon",
                                                                 model="EOS 5D"), colour=(40, 160, 40), seed=n)))
        made.append((f"iphone_{n}.jpg", photos.photo(photos.Exif(taken=f"2023:07:0{n + 1} 18:30:00", offset="+02:00",
                                                                 make="Apple", model="iPhone 13", lat=43.55, lon=7.01),
                                                     colour=(40, 40, 180), seed=10 + n)))
    return made


@pytest.fixture(scope="module")
def stack(tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("ui-features")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny",
                        allow_private_networks=True, api_keys=READ, admin_api_keys=ADMIN)
    big = [big_image(seed) for seed in range(BIG)]
    for n, data in enumerate(big):
        (root / "big").mkdir(exist_ok=True)
        (root / "big" / f"big_{n}.jpg").write_bytes(data)
    shapes = make_shapes(2, seed=5)
    write_folder(root / "shapes", shapes)
    for n, shape in enumerate(shapes[:4]):  # the same pictures as PNG: other bytes, near-duplicates of the JPEGs
        Image.open(io.BytesIO(shape.data)).save(root / "shapes" / f"copy_{n}.png")
    (root / "photos").mkdir()
    for name, data in exif_photos():
        (root / "photos" / name).write_bytes(data)
    with ImageServer() as server:
        hostile = make_shapes(1, seed=6)[: len(HOSTILE_CAPTIONS) + 1]
        lines = [f"{server.add(f'/hostile_{n}.jpg', image.data)}\t{caption}"
                 for n, (image, caption) in enumerate(zip(hostile, HOSTILE_CAPTIONS, strict=False))]
        server.add("/shot.jpg", hostile[-1].data)
        lines.append(f"{server.url(BREAKOUT_PATH)}\thostile breakout")
        (root / "urls.txt").write_text("\n".join(lines) + "\n")
        ingest(settings, "--folder", str(root / "big"), "--folder", str(root / "shapes"), "--folder", str(root / "photos"),
               "--urls", str(root / "urls.txt"))
    sizes = {hashlib.sha256(data).hexdigest(): len(data) for data in big}
    with ApiThread(create_app(settings)) as api:
        ui, ui_url = start_ui(api.url, ADMIN)
        try:
            yield {"ui": ui_url, "api": api.url, "big_sizes": sizes, "breakout": hashlib.sha256(hostile[-1].data).hexdigest()}
        finally:
            stop(ui)


def api_search(stack, **body) -> dict:
    response = httpx.post(f"{stack['api']}/search", json=body, headers={"X-API-Key": READ}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def api_ids(stack, **body) -> list[str]:
    return [r["id"][:12] for r in api_search(stack, **body)["results"]]


def wait_for_ids(page: Page, expected: list[str]) -> None:
    """Until the page shows exactly these results (Streamlit replaces the old ones element by element)."""
    deadline, shown = time.monotonic() + TIMEOUT_MS / 1000, []
    while time.monotonic() < deadline:
        shown = result_ids(page)
        if shown == expected and not page.locator("[data-stale='true']").count():
            return
        time.sleep(0.2)
    raise AssertionError(f"the page shows {shown}, expected {expected}")


def choose(page: Page, widget: str, label: str, option: str) -> None:
    """Pick ``option`` in the sidebar's multiselect or selectbox labelled ``label``. Typed first: the
    dropdown draws only the options in view, and a long list (the tags) may hold it further down."""
    page.get_by_test_id(widget).filter(has_text=label).click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def made_by_them(page: Page) -> list[str]:
    """The images and links on the page that lead to a hostile host (or are the raw HTML's image)."""
    return page.evaluate("""hosts => [...document.querySelectorAll('img, a, iframe, script, [src], [href]')]
        .map(e => e.getAttribute('src') ?? e.getAttribute('href') ?? '')
        .filter(v => v === 'x' || hosts.some(h => { try { return new URL(v, location.href).hostname.endsWith(h) }
                                                  catch { return false } }))""", list(HOSTILE_HOSTS))


def open_ui(page: Page, stack) -> None:
    page.goto(stack["ui"])
    expect(page.get_by_text("API healthy")).to_be_visible()


def test_hostile_captions_and_urls_are_shown_as_text(stack, page, artifacts_dir):
    open_ui(page, stack)
    page.get_by_test_id("stRadio").get_by_text("words", exact=True).click()
    search_text(page, "hostile")
    expected = api_ids(stack, text="hostile", k=12, mode="text")
    assert len(expected) == len(HOSTILE_CAPTIONS) + 1
    wait_for_ids(page, expected)
    text = "\n".join(page.get_by_test_id("stMarkdownContainer").all_inner_texts()).replace(WORD_JOINER, "")
    for caption in HOSTILE_CAPTIONS:  # every character of it, as text
        assert caption in text
    assert made_by_them(page) == []
    assert page.locator(".katex, math").count() == 0  # no $…$ math
    assert page.title() != "pwned"
    line = page.get_by_test_id("stMarkdownContainer").filter(has_text="hostile breakout")
    expect(line.get_by_role("link")).to_have_count(1)  # the source link, whole: the URL did not break out of it
    href = line.get_by_role("link").get_attribute("href") or ""
    assert href.startswith("http://127.0.0.1:") and "/shot.jpg?a=" in href and not set(href) & set("()[] "), href
    page.get_by_role("button", name="Details").nth(result_ids(page).index(stack["breakout"][:12])).click()
    expect(page.get_by_text("Came from")).to_be_visible()
    assert made_by_them(page) == []
    page.screenshot(path=str(artifacts_dir / "ui-hostile-text.png"), full_page=True)


def test_the_grid_moves_thumbnails_only(stack, page, artifacts_dir):
    open_ui(page, stack)
    page.get_by_label("Min width (px)").fill("1000")  # only the large images are that wide
    page.get_by_label("Min width (px)").press("Enter")
    page.get_by_test_id("stSelectbox").filter(has_text="Results").click()
    page.get_by_role("option", name="48", exact=True).click()
    search_text(page, "a photo")
    expected = api_search(stack, text="a photo", k=48, filters={"min_width": 1000})["results"]
    assert len(expected) == 48
    wait_for_ids(page, [r["id"][:12] for r in expected])
    images = page.get_by_test_id("stImage").locator("img")
    expect(images).to_have_count(48)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    largest = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stImage] img')]"
                            ".map(i => Math.max(i.naturalWidth, i.naturalHeight)))")
    moved = page.evaluate("() => performance.getEntriesByType('resource')"
                          ".filter(e => e.name.includes('/media/')).reduce((n, e) => n + e.encodedBodySize, 0)")
    originals = sum(stack["big_sizes"][r["id"]] for r in expected)
    print(f"\na page of 48 results: originals {originals:,} bytes, thumbnails moved {moved:,} bytes")
    assert largest <= 320
    assert 0 < moved <= PAGE_BUDGET
    page.screenshot(path=str(artifacts_dir / "ui-thumbnails.png"), full_page=True)


def test_load_more_appends_the_next_page(stack, page, artifacts_dir):
    open_ui(page, stack)
    search_text(page, "a red circle")
    first = api_search(stack, text="a red circle", k=12)
    second = api_search(stack, text="a red circle", k=12, offset=first["next_offset"])
    wait_for_ids(page, [r["id"][:12] for r in first["results"]])
    page.get_by_role("button", name="Load more").click()
    wait_for_ids(page, [r["id"][:12] for r in first["results"] + second["results"]])
    expect(page.get_by_text("24 results in")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "ui-load-more.png"), full_page=True)


def test_filters_by_format_camera_date_and_tags(stack, page, artifacts_dir):
    open_ui(page, stack)
    search_text(page, "a green thing")
    choose(page, "stMultiSelect", "Format", "png")
    pngs = api_ids(stack, text="a green thing", k=12, filters={"format": ["png"]})
    assert len(pngs) == 4
    wait_for_ids(page, pngs)
    page.get_by_test_id("stMultiSelect").filter(has_text="Format").get_by_role("button", name="Clear all").click()

    page.get_by_label("Camera").fill("canon")
    page.get_by_label("Camera").press("Enter")
    canon = api_ids(stack, text="a green thing", k=12, filters={"camera": "canon"})
    assert len(canon) == 3
    wait_for_ids(page, canon)
    page.get_by_label("Camera").fill("")
    page.get_by_label("Camera").press("Enter")

    page.get_by_role("spinbutton", name="year, Taken after").click()
    page.keyboard.type("20220101")  # year, month, day: the field moves on by itself
    page.get_by_role("heading", name="Image search").click()  # the date is taken when the field loses focus
    recent = api_ids(stack, text="a green thing", k=12, filters={"taken_after": "2022-01-01"})
    assert len(recent) == 3  # the iPhone's
    wait_for_ids(page, recent)
    page.screenshot(path=str(artifacts_dir / "ui-filters.png"), full_page=True)


def test_filter_by_a_tag_from_the_tag_list(stack, page):
    tags = httpx.get(f"{stack['api']}/tags", headers={"X-API-Key": READ}).json()["tags"]
    tag = next(t["tag"] for t in tags if 0 < t["count"] < 40)  # one that leaves some images out
    open_ui(page, stack)
    search_text(page, "a blue square")
    choose(page, "stMultiSelect", "Tags", tag)
    expected = api_ids(stack, text="a blue square", k=12, filters={"tags": [tag]})
    assert expected
    wait_for_ids(page, expected)


def test_sort_by_date(stack, page):
    open_ui(page, stack)
    search_text(page, "a photo")
    page.get_by_test_id("stRadio").filter(has_text="Sort by").get_by_text("newest", exact=True).click()
    newest = api_search(stack, text="a photo", k=12, sort="newest")["results"]
    assert [r["camera"] for r in newest[:3]] == ["Apple iPhone 13"] * 3
    wait_for_ids(page, [r["id"][:12] for r in newest])
    page.get_by_test_id("stRadio").filter(has_text="Sort by").get_by_text("oldest", exact=True).click()
    oldest = api_search(stack, text="a photo", k=12, sort="oldest")["results"]
    assert [r["camera"] for r in oldest[:3]] == ["Canon EOS 5D"] * 3
    wait_for_ids(page, [r["id"][:12] for r in oldest])


def test_collapse_near_duplicates(stack, page):
    open_ui(page, stack)
    search_text(page, "a colourful pattern")
    plain = api_ids(stack, text="a colourful pattern", k=12)
    wait_for_ids(page, plain)
    page.get_by_text("Collapse near-duplicates").click()
    collapsed = api_ids(stack, text="a colourful pattern", k=12, collapse=True)
    assert collapsed != plain  # the noise images are near-duplicates of each other for the tiny model
    wait_for_ids(page, collapsed)


def button(page: Page, key: str):
    """The button Streamlit drew for widget ``key`` (its container carries the key as a class; a button
    with a tooltip is drawn twice, the first is the one shown)."""
    return page.locator(f".st-key-{key} button").first


def test_feedback_refines_the_query_and_each_chip_takes_one_back(stack, page, artifacts_dir):
    text = "a red circle"
    open_ui(page, stack)
    search_text(page, text)
    original = api_search(stack, text=text, k=12)["results"]
    wait_for_ids(page, [r["id"][:12] for r in original])
    liked = original[3]["id"]
    button(page, f"up-{liked}").click()
    with_like = api_search(stack, text=text, k=12, positive_ids=[liked])["results"]
    wait_for_ids(page, [r["id"][:12] for r in with_like])
    expect(button(page, f"chip-liked-{liked}")).to_contain_text(f"{liked[:8]} ×")
    disliked = next(r["id"] for r in with_like[1:] if r["id"] != liked)
    button(page, f"down-{disliked}").click()
    wait_for_ids(page, api_ids(stack, text=text, k=12, positive_ids=[liked], negative_ids=[disliked]))
    expect(button(page, f"chip-disliked-{disliked}")).to_be_visible()
    page.get_by_text("Refined by your feedback").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "ui-feedback.png"), full_page=True)

    button(page, f"chip-liked-{liked}").click()  # only the 👎 stays
    without_like = api_search(stack, text=text, k=12, negative_ids=[disliked])["results"]
    wait_for_ids(page, [r["id"][:12] for r in without_like])
    expect(page.locator(f".st-key-chip-liked-{liked}")).to_have_count(0)
    expect(button(page, f"chip-disliked-{disliked}")).to_be_visible()
    button(page, f"up-{without_like[0]['id']}").click()
    expect(button(page, f"chip-liked-{without_like[0]['id']}")).to_be_visible()
    page.get_by_role("button", name="Clear feedback").click()  # back to the query alone
    wait_for_ids(page, [r["id"][:12] for r in original])
    expect(page.get_by_text("Refined by your feedback")).to_have_count(0)


def test_details_of_a_photo(stack, page, artifacts_dir):
    open_ui(page, stack)
    page.get_by_label("Camera").fill("iphone 13")
    page.get_by_label("Camera").press("Enter")
    search_text(page, "a photo")
    photo = api_search(stack, text="a photo", k=12, filters={"camera": "iphone 13"})["results"][0]
    wait_for_ids(page, api_ids(stack, text="a photo", k=12, filters={"camera": "iphone 13"}))
    button(page, f"details-{photo['id']}").click()
    expect(page.get_by_text("Came from")).to_be_visible()
    facts = "\n".join(page.get_by_test_id("stMarkdownContainer").all_inner_texts()).replace(WORD_JOINER, "")
    assert f"Score {photo['score']:.3f} · matched by vector" in facts
    assert "Camera Apple iPhone 13" in facts and photo["taken_at"] in facts and "43.55000, 7.01000" in facts
    assert f"Tags {', '.join(photo['tags'])}" in facts
    assert all(location in facts for location in photo["urls"])
    expect(page.get_by_text(photo["id"], exact=True)).to_be_visible()  # the whole id
    large = page.get_by_test_id("stImage").locator("img")
    expect(large).to_have_count(1)
    page.wait_for_function("() => document.querySelector('[data-testid=stImage] img').naturalWidth > 0")
    assert large.evaluate("i => i.naturalWidth") == photo["width"]  # the original, not the thumbnail
    page.screenshot(path=str(artifacts_dir / "ui-details.png"), full_page=True)
    button(page, f"details-more-{photo['id']}").click()
    expect(page.get_by_text(f"Similar to {photo['id'][:12]}")).to_be_visible()


def test_the_duplicates_page(stack, page, artifacts_dir):
    groups = httpx.get(f"{stack['api']}/duplicates", headers={"X-API-Key": READ}, timeout=120).json()["groups"]
    assert groups and len(groups[0]["ids"]) >= 2
    open_ui(page, stack)
    page.get_by_test_id("stRadio").filter(has_text="Page").get_by_text("Duplicates", exact=True).click()
    expect(page.get_by_text(f"{len(groups)} group")).to_be_visible()
    expected = [image_id[:12] for group in groups for image_id in group["ids"]]
    wait_for_ids(page, expected)
    expect(page.get_by_test_id("stImage")).to_have_count(len(expected))
    for n, group in enumerate(groups, start=1):
        expect(page.get_by_text(f"Group {n} · {len(group['ids'])} images · score {group['min_score']:.3f}")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "ui-duplicates.png"), full_page=True)
    second = groups[0]["ids"][1]
    button(page, f"dup-more-1-{second}").click()
    expect(page.get_by_text(f"Similar to {second[:12]}")).to_be_visible()


def test_remove_an_image_with_an_admin_key(stack, page):
    open_ui(page, stack)
    search_text(page, "a photo")
    victim = api_search(stack, text="a photo", k=12)["results"][5]["id"]
    button(page, f"details-{victim}").click()
    page.get_by_role("button", name="Remove").click()
    page.get_by_role("button", name="Remove for good").click()
    expect(page.get_by_text(f"Removed {victim[:12]} from the index.")).to_be_visible()
    assert victim[:12] not in result_ids(page)
    gone = httpx.get(f"{stack['api']}/images/{victim}", headers={"X-API-Key": READ})
    assert gone.status_code == 404
