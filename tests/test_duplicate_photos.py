"""Near-duplicates of real photographs, end to end in both stores: scikit-image's sample photos and
copies of each (re-encoded as a low-quality JPEG, halved, shrunk to WebP, cropped by 3% on every side,
cropped by 6% at a corner and scaled back), ingested by the real `imagesearch ingest`, then grouped by
GET /duplicates and `imagesearch duplicates`, and collapsed in searches through the API and the CLI.
Every copy must be grouped with its original, and no two photographs together.

The embedding is ViT-B-32 with random weights (the tests' cached export), not a trained CLIP (none
can be downloaded here) and not the test model (trained on coloured shapes, it maps photographs
almost anywhere). A random network is a fixed random feature map of the pixels: copies of a photo
stay close, different photos differ by their colours, light and layout. It does not know what a
photo shows, so different photos sit closer than a trained CLIP puts them (cosines up to 0.96 here,
against 0.3 to 0.6), and photos of flat textures or dark microscopy are left out: it cannot tell
them apart. The threshold is set in the gap the first test measures on these very vectors, so a
failure says whether the embedding or the grouping is at fault.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.stores import make_store
from tests.support.cli import run_cli
from tests.support.search_api import ApiThread, ingest, settings_env

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "coins", "moon"]
THRESHOLD = 0.965  # in the measured gap (the first test): not the default, made for a trained CLIP
MODEL = "vit-b-32-random"


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def copies(image: Image.Image) -> dict[str, bytes]:
    w, h = image.size
    return {
        "jpeg35.jpg": encoded(image, "JPEG", quality=35),
        "half.jpg": encoded(image.resize((w // 2, h // 2), Image.Resampling.BICUBIC), "JPEG", quality=85),
        "small.webp": encoded(image.resize((round(w * 0.7), round(h * 0.7)), Image.Resampling.LANCZOS), "WEBP", quality=60),
        "crop3.png": encoded(image.crop((round(0.03 * w), round(0.03 * h), w - round(0.03 * w), h - round(0.03 * h))), "PNG"),
        "corner6.jpg": encoded(image.crop((round(0.06 * w), round(0.06 * h), w, h)).resize((w, h)), "JPEG", quality=90),
    }


class Photos:
    def __init__(self, settings: Settings, photo_of: dict[str, str], originals: dict[str, str], http: httpx.Client):
        self.settings, self.photo_of, self.originals, self.http = settings, photo_of, originals, http
        self.env = {**settings_env(settings), "IMAGESEARCH_DUPLICATE_THRESHOLD": str(THRESHOLD)}

    def groups(self) -> list[set[str]]:
        """The expected groups: each photo's original and copies."""
        return [{i for i, photo in self.photo_of.items() if photo == name} for name in PHOTOS]


@pytest.fixture(scope="module", params=["local", "elasticsearch"])
def photos(request, tmp_path_factory, vit_b32_repo):
    root = tmp_path_factory.mktemp("duplicate-photos")
    settings = Settings(data_dir=root / "var", model_repository=vit_b32_repo, model=MODEL, search_rate_per_s=0,
                        upload_rate_per_s=0, duplicate_threshold=THRESHOLD)
    if request.param == "elasticsearch":
        node = request.getfixturevalue("es_node")
        settings = settings.model_copy(update={"store": "elasticsearch", "es_url": node.url, "es_index_type": "hnsw",
                                               "es_index_prefix": f"d{uuid.uuid4().hex[:10]}"})
    folder = root / "photos"
    folder.mkdir()
    photo_of, originals = {}, {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        for suffix, data in {"original.png": encoded(image, "PNG"), **copies(image)}.items():
            (folder / f"{name}-{suffix}").write_bytes(data)
            photo_of[hashlib.sha256(data).hexdigest()] = name
        originals[name] = hashlib.sha256(encoded(image, "PNG")).hexdigest()
    out = ingest(settings, "--folder", str(folder))
    assert f"stored {len(photo_of)}" in out, out
    with ApiThread(create_app(settings)) as thread:
        yield Photos(settings, photo_of, originals, httpx.Client(base_url=thread.url, timeout=120))


def test_the_embedding_puts_copies_closer_than_different_photos(photos):
    """The premise, measured on the stored vectors: every pair of one photo's images is above the
    threshold (so each group is whole however its pairs chain), every pair of two photos below it."""
    with contextlib.closing(make_store(photos.settings)) as store:
        found = store.get_vectors(MODEL, list(photos.photo_of))
    ids = list(photos.photo_of)
    assert set(found) == set(ids)
    scores = np.stack([found[i] for i in ids]) @ np.stack([found[i] for i in ids]).T
    same = np.array([[photos.photo_of[a] == photos.photo_of[b] for b in ids] for a in ids])
    apart = ~np.eye(len(ids), dtype=bool)
    assert scores[same & apart].min() > THRESHOLD > scores[~same].max(), (scores[same & apart].min(), scores[~same].max())


def test_every_copy_is_grouped_with_its_original_and_no_two_photos_together(photos):
    answer = photos.http.get("/duplicates", params={"threshold": THRESHOLD})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["threshold"] == THRESHOLD and body["model"] == MODEL
    groups = [set(group["ids"]) for group in body["groups"]]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, photos.groups()))
    assert all(group["min_score"] >= THRESHOLD and group["ids"] == sorted(group["ids"]) for group in body["groups"])

    printed = run_cli("duplicates", "--json", env=photos.env)  # the threshold from IMAGESEARCH_DUPLICATE_THRESHOLD
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["groups"] == body["groups"]
    human = run_cli("duplicates", "--threshold", str(THRESHOLD), env=photos.env)
    assert human.returncode == 0 and human.stdout.startswith(f"{len(PHOTOS)} group(s) of near-duplicates, "
                                                              f"{len(photos.photo_of)} images"), human.stdout
    assert all(image_id in human.stdout for image_id in photos.photo_of)
    assert photos.http.get("/duplicates", params={"threshold": 0.4}).status_code == 422
    refused = run_cli("duplicates", "--threshold", "0.4", env=photos.env)
    assert refused.returncode == 2 and "threshold must be between 0.5 and 1.0" in refused.stderr


def test_collapse_leaves_one_image_of_each_photo_through_the_api_and_the_cli(photos):
    original = photos.originals["astronaut"]
    plain = photos.http.post("/search", json={"image_id": original, "k": len(PHOTOS)}).json()["results"]
    assert {photos.photo_of[r["id"]] for r in plain[:6]} == {"astronaut"}  # without collapse: its copies first
    collapsed = photos.http.post("/search", json={"image_id": original, "k": len(PHOTOS), "collapse": True}).json()
    assert collapsed["results"][0]["id"] == original
    assert sorted(photos.photo_of[r["id"]] for r in collapsed["results"]) == sorted(PHOTOS)  # each photo once
    printed = run_cli("search", "--id", original, "-k", str(len(PHOTOS)), "--collapse", "--json", env=photos.env)
    assert printed.returncode == 0, printed.stderr
    assert [r["id"] for r in json.loads(printed.stdout)["results"]] == [r["id"] for r in collapsed["results"]]
