"""Tags (zero-shot labels), in both stores: shape images with neutral file names and no captions,
ingested by the real `imagesearch ingest` (first with tagging off, then tagged from their stored
vectors, then more tagged as they are embedded), searched through the API and the CLI with the tag
filter and by keyword, and counted by `GET /tags` and `imagesearch tags`. The test model knows four
colours and three shapes: the oracle is what each image was drawn as.

Its text tower learned only those seven words (from captions like "a red circle"): any other word is
a token it never trained, whose vector lands near some shapes by chance (with the shipped vocabulary a
red circle's own labels rank about 12th and 49th). So the vocabulary here is those seven words, and
for each image five of them are wrong; the shipped vocabulary is checked for its mechanics only."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.model_card import load_card
from imagesearch.preprocess import prepare
from imagesearch.records import SearchFilters
from imagesearch.stores import make_store
from imagesearch.tags import DEFAULT_VOCABULARY, Tagger, Vocabulary, VocabularyError, load_vocabulary, make_tagger
from imagesearch.tags.labels import cache_path, labels_key
from tests.support import shapes
from tests.support.cli import run_cli
from tests.support.search_api import ApiThread, ingest, make_shapes, settings_env

REPO = Path(__file__).resolve().parent.parent
KNOWN = [*shapes.COLOURS, *shapes.SHAPES]  # the words the test model learned
VOCABULARY = "# the test model's words\nRed\ngreen\n\nblue\nyellow\n  circle \nsquare\ntriangle\nred\n"
# Seven labels: an image's own two stand about 1.5 standard deviations above its mean, the others
# below it (the shipped default, 3, suits hundreds of labels).
MIN_SCORE = 1.0


# --- the vocabulary, the settings, the package -----------------------------------------------------


def test_the_shipped_vocabulary_has_hundreds_of_everyday_labels_with_the_colours_and_shapes(tmp_path):
    vocabulary = load_vocabulary()
    assert vocabulary.source == DEFAULT_VOCABULARY and 250 <= len(vocabulary) <= 600
    assert set(KNOWN) <= set(vocabulary.labels) and {"dog", "beach", "wood", "running", "teddy bear"} <= set(vocabulary.labels)
    assert all(label == " ".join(label.lower().split()) and "," not in label for label in vocabulary.labels)

    (tmp_path / "mine.txt").write_text(VOCABULARY)
    mine = load_vocabulary(tmp_path / "mine.txt")
    assert mine.labels == tuple(KNOWN) and mine.digest != vocabulary.digest
    for text, problem in (("# only a comment\n\n", "has no label"), ("red\nsalt, pepper\n", "mine.txt:2")):
        (tmp_path / "mine.txt").write_text(text)
        with pytest.raises(VocabularyError, match=problem):
            load_vocabulary(tmp_path / "mine.txt")
    with pytest.raises(VocabularyError, match="cannot read"):
        load_vocabulary(tmp_path / "absent.txt")


def test_tag_settings_and_the_tag_filter_are_checked():
    assert Settings(tag_vocabulary="").tag_vocabulary is None  # empty: the shipped one
    with pytest.raises(ValueError, match="must contain {label}"):
        Settings(tag_template="a photo of a thing")
    assert SearchFilters(tags="Red, teddy  Bear").tags == ["red", "teddy bear"]
    assert SearchFilters(tags=["red", "red,circle"]).tags == ["red", "circle"]
    for bad in ([], [" , "], ["x" * 101], [f"t{i}" for i in range(21)]):
        with pytest.raises(ValueError):
            SearchFilters(tags=bad)


def test_the_built_wheel_carries_the_vocabulary(tmp_path):
    """The package data (pyproject.toml): a wheel built from a copy of the sources holds the file."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        (source / name).write_bytes((REPO / name).read_bytes())
    for folder in ("imagesearch", "api", "ingest", "ui"):
        subprocess.run(["cp", "-r", str(REPO / folder), str(source / folder)], check=True)
    built = subprocess.run([sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"],
                           cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    with zipfile.ZipFile(source / "dist" / built.stdout.strip().splitlines()[-1]) as wheel:
        assert wheel.read("imagesearch/tags/vocabulary.txt") == DEFAULT_VOCABULARY.read_bytes()


# --- scoring -------------------------------------------------------------------------------------------


def test_each_label_is_judged_against_the_image_s_mean_over_the_vocabulary():
    labels = np.eye(8, dtype=np.float32)  # eight labels, each its own direction
    tagger = Tagger("m", Vocabulary(tuple("abcdefgh"), Path("test")), labels, per_image=2, min_score=1.0, key="k")
    image = np.array([0.6, 0.5, 0.45, 0, 0, 0, 0, 0], np.float32)  # near a, b and c: the cap keeps two
    flat = np.full(8, 1 / np.sqrt(8), np.float32)  # no label stands out: none kept
    several = np.stack([np.eye(8)[3], np.eye(8)[5]]).astype(np.float32)  # [Q, D]: each label's best query
    assert tagger.tag(np.stack([image, flat])) == [["a", "b"], []]
    assert tagger.tag(several[None]) == [["d", "f"]] and tagger.tag(np.zeros((0, 8))) == []


def test_on_the_test_model_standardized_scores_keep_both_labels_where_a_softmax_keeps_one(settings, tmp_path):
    """The measurement behind the scoring rule (imagesearch/tags/tagger.py), on images the model never
    saw: both rules give no wrong label, but a softmax over the labels (at the logit scale the model
    was trained with) lets the shape crush the colour, while the standardized score keeps both."""
    (tmp_path / "vocabulary.txt").write_text(VOCABULARY)
    tagger = make_tagger(settings.model_copy(update={"tag_vocabulary": tmp_path / "vocabulary.txt", "tag_min_score": MIN_SCORE}))
    encoder = make_encoder(settings, towers=("visual",))
    images = make_shapes(10, seed=12345)
    vectors = encoder.encode_images(np.stack([prepare(image.data, encoder.card) for image in images]))
    encoder.close()
    truth = [{image.colour, image.shape} for image in images]

    logits = 20.0 * vectors @ tagger.vectors.T  # tests/support/test_model.py trains at 20
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    by_softmax = [{tagger.vocabulary.labels[j] for j in np.argsort(-p)[:5] if p[j] >= 0.1} for p in softmax]
    by_score = [set(tags) for tags in tagger.tag(vectors)]
    for found in (by_score, by_softmax):
        assert all(tags <= true for tags, true in zip(found, truth, strict=True))  # no wrong label
    both = {name: np.mean([tags == true for tags, true in zip(found, truth, strict=True)])
            for name, found in (("score", by_score), ("softmax", by_softmax))}
    assert both["score"] > both["softmax"] + 0.15, both
    red_circles = [tags for tags, image in zip(by_score, images, strict=True) if image.caption == "a red circle"]
    assert red_circles and all(tags == {"red", "circle"} for tags in red_circles)


def test_label_vectors_are_embedded_once_per_model_and_vocabulary(settings, tmp_path, monkeypatch):
    (tmp_path / "vocabulary.txt").write_text(VOCABULARY)
    settings = settings.model_copy(update={"tag_vocabulary": tmp_path / "vocabulary.txt"})
    first = make_tagger(settings)
    card = load_card(settings.model_repository, settings.model)
    assert cache_path(settings, card, labels_key(settings, card, first.vocabulary)).is_file()

    import imagesearch.encoders

    def no_text_tower(*args, **kwargs):
        raise AssertionError("the text tower was loaded again")

    monkeypatch.setattr(imagesearch.encoders, "make_encoder", no_text_tower)
    again = make_tagger(settings.model_copy(update={"tags_per_image": 2}))  # other settings, the same labels
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.key != first.key  # tagged otherwise: every image is tagged again
    monkeypatch.undo()
    other = make_tagger(settings.model_copy(update={"tag_template": "an image of a {label}"}))
    assert other.key != first.key and not np.array_equal(other.vectors, first.vectors)
    assert len(list((settings.data_dir / "tags").glob("*.npy"))) == 2


# --- end to end, both stores -------------------------------------------------------------------------


class Tagged:
    def __init__(self, settings: Settings, images, url: str):
        self.settings, self.images = settings, images
        self.http = httpx.Client(base_url=url, timeout=60)

    def ids_where(self, keep) -> set[str]:
        return {i for i, image in self.images.items() if keep(image)}

    def search(self, **params) -> list[dict]:
        answer = self.http.get("/search", params={"q": "a shape", "k": 50, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()["results"]


@pytest.fixture(scope="module", params=["local", "elasticsearch"])
def tagged(request, tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("tags")
    (root / "vocabulary.txt").write_text(VOCABULARY)
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny", max_k=50,
                        search_rate_per_s=0, tag_vocabulary=root / "vocabulary.txt", tag_min_score=MIN_SCORE)
    if request.param == "elasticsearch":
        node = request.getfixturevalue("es_node")
        settings = settings.model_copy(update={"store": "elasticsearch", "es_url": node.url, "es_index_type": "hnsw",
                                               "es_index_prefix": f"t{uuid.uuid4().hex[:10]}"})
    env = {**settings_env(settings), "IMAGESEARCH_TAG_VOCABULARY": str(root / "vocabulary.txt"),
           "IMAGESEARCH_TAG_MIN_SCORE": str(MIN_SCORE)}
    made = make_shapes(1, seed=21) + make_shapes(4, seed=22, classes=[("red", "circle")])
    images = {}
    for batch, (start, end) in enumerate(((0, 10), (10, len(made)))):  # no caption, no word of the drawing in the name
        folder = root / f"batch-{batch}"
        folder.mkdir()
        for n in range(start, end):
            (folder / f"img-{n:04d}.jpg").write_bytes(made[n].data)
            images[hash_of(made[n].data)] = made[n]

    untagged = run(env | {"IMAGESEARCH_TAGGING": "false"}, "ingest", "--folder", str(root / "batch-0"))
    assert "embed: 10 embedded" in untagged and "tags (" not in untagged, untagged
    backlog = run(env, "ingest", "embed")  # embedded before tagging was on: tagged from the stored vectors
    assert "tags (shapes-tiny, 7 labels): 0 images tagged as embedded, 10 from stored vectors" in backlog, backlog
    more = run(env, "ingest", "--folder", str(root / "batch-1"))
    assert f"tags (shapes-tiny, 7 labels): {len(made) - 10} images tagged as embedded, 0 from stored vectors" in more, more
    with ApiThread(create_app(settings)) as thread:
        yield Tagged(settings, images, thread.url)


def hash_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(env: dict[str, str], *args: str) -> str:
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def tags_env(tagged: Tagged) -> dict[str, str]:
    return {**settings_env(tagged.settings), "IMAGESEARCH_TAG_VOCABULARY": str(tagged.settings.tag_vocabulary),
            "IMAGESEARCH_TAG_MIN_SCORE": str(MIN_SCORE)}


def test_a_red_circle_is_tagged_red_and_circle_and_no_image_gets_a_wrong_tag(tagged):
    results = {r["id"]: r for r in tagged.search()}
    assert set(results) == set(tagged.images)
    for image_id, image in tagged.images.items():
        tags = results[image_id]["tags"]
        assert set(tags) <= {image.colour, image.shape}, (image.caption, tags)
        if image.caption == "a red circle":
            assert sorted(tags) == ["circle", "red"], tags


def test_the_tag_filter_keeps_the_images_with_every_tag_through_get_post_and_the_cli(tagged):
    tags_of = {r["id"]: set(r["tags"]) for r in tagged.search()}
    red_circles = tagged.ids_where(lambda image: image.caption == "a red circle")
    env = tags_env(tagged)
    for tags in (["red"], ["red", "circle"], ["circle"], ["Yellow", "SQUARE"]):
        wanted = {t.lower() for t in tags}
        expected = {i for i, held in tags_of.items() if wanted <= held}
        drawn = {i for i, image in tagged.images.items() if wanted <= {image.colour, image.shape}}
        assert {r["id"] for r in tagged.search(tags=tags)} == expected and expected <= drawn
        assert {r["id"] for r in tagged.search(tags=",".join(tags))} == expected
        posted = tagged.http.post("/search", json={"text": "a shape", "k": 50, "filters": {"tags": tags}})
        assert posted.status_code == 200 and {r["id"] for r in posted.json()["results"]} == expected, posted.text
        printed = run_cli("search", "a shape", "-k", "50", "--json", *(f"--tag={t}" for t in tags), env=env)
        assert printed.returncode == 0 and {r["id"] for r in json.loads(printed.stdout)["results"]} == expected
    assert red_circles <= {r["id"] for r in tagged.search(tags=["red", "circle"])}
    assert tagged.search(tags=["red", "circle"], taken_after="2000-01-01") == []  # with another filter: both apply
    refused = tagged.http.get("/search", params={"q": "a shape", "tags": ""})
    assert refused.status_code in (400, 422) and "tags" in refused.json()["detail"]


def test_keyword_search_finds_images_by_their_tags_alone(tagged):
    results = tagged.search()
    circles = {r["id"] for r in results if "circle" in r["tags"]}
    assert circles and all(not r["captions"] and "circle" not in r["url"] for r in results)
    by_words = tagged.http.get("/search", params={"q": "circle", "mode": "text", "k": 50}).json()["results"]
    assert {r["id"] for r in by_words} == circles and all(r["matched"] == ["text"] for r in by_words)
    hybrid = tagged.http.get("/search", params={"q": "red circle", "mode": "hybrid", "k": 50}).json()["results"]
    assert {r["id"] for r in hybrid if "text" in r["matched"]} == {r["id"] for r in results if {"red", "circle"} & set(r["tags"])}


def test_get_tags_and_the_cli_count_them_the_most_held_first(tagged):
    held: dict[str, int] = {}
    for result in tagged.search():
        for tag in result["tags"]:
            held[tag] = held.get(tag, 0) + 1
    expected = sorted(held.items(), key=lambda item: (-item[1], item[0]))
    answer = tagged.http.get("/tags")
    assert answer.status_code == 200 and [(t["tag"], t["count"]) for t in answer.json()["tags"]] == expected
    assert [t["tag"] for t in tagged.http.get("/tags", params={"limit": 2}).json()["tags"]] == [t for t, _ in expected[:2]]
    assert tagged.http.get("/tags", params={"limit": 0}).status_code == 422
    printed = run_cli("tags", env=tags_env(tagged))
    assert printed.returncode == 0 and [line.split(None, 1) for line in printed.stdout.splitlines()] == [
        [str(n), tag] for tag, n in expected]
    as_json = run_cli("tags", "--json", "--limit", "3", env=tags_env(tagged))
    assert json.loads(as_json.stdout) == tagged.http.get("/tags", params={"limit": 3}).json()


def test_another_tagging_tags_again_from_the_stored_vectors_and_a_rerun_does_nothing(tagged):
    env = tags_env(tagged)
    assert "0 images tagged as embedded, 0 from stored vectors" in run(env, "ingest", "embed")
    retagged = run(env | {"IMAGESEARCH_TAGS_PER_IMAGE": "1"}, "ingest", "embed")
    assert f"0 images tagged as embedded, {len(tagged.images)} from stored vectors" in retagged, retagged
    assert all(len(r["tags"]) <= 1 for r in tagged.search())
    assert f"{len(tagged.images)} from stored vectors" in run(env, "ingest", "embed")  # and back
    assert any(len(r["tags"]) == 2 for r in tagged.search())


def test_the_schema_documents_tags(tagged):
    schema = tagged.http.get("/openapi.json").json()
    assert "tags" in {p["name"] for p in schema["paths"]["/search"]["get"]["parameters"]}
    assert "/tags" in schema["paths"] and "limit" in {p["name"] for p in schema["paths"]["/tags"]["get"]["parameters"]}
    components = schema["components"]["schemas"]
    assert "tags" in components["Filters"]["properties"] and "tags" in components["SearchResult"]["properties"]
    assert set(components["TagCount"]["properties"]) == {"tag", "count"}


# --- the shipped vocabulary, and which model tags ------------------------------------------------------


def test_with_the_shipped_vocabulary_each_image_keeps_a_few_of_its_labels(settings, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for n, image in enumerate(make_shapes(1, seed=23)):
        (folder / f"{n}.jpg").write_bytes(image.data)
    printed = ingest(settings, "--folder", str(folder))
    vocabulary = load_vocabulary()
    assert f"tags (shapes-tiny, {len(vocabulary)} labels): 12 images tagged as embedded" in printed, printed
    store = make_store(settings)
    try:
        tags = [store.get(hash_of(image.data)).tags for image in make_shapes(1, seed=23)]
        counts = store.tag_counts(1000)
    finally:
        store.close()
    assert all(len(t) <= settings.tags_per_image and set(t) <= set(vocabulary.labels) for t in tags)
    assert sum(count for _, count in counts) == sum(map(len, tags)) > 0
    assert len(list((settings.data_dir / "tags").glob("shapes-tiny-*.npy"))) == 1
