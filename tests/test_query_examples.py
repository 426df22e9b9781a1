"""Negative and example queries: texts to steer away from, indexed images to look like or not.

In every store (the store contract's three), with the trained test model: the ranking the service
gives is the one numpy computes by brute force from the encoder's text vectors and the store's
``get_vector``s (the normalized mean of the positives minus the weight times the mean of the
negatives); then through the API (GET's short form, POST's lists) and the CLI, with their checks."""

from __future__ import annotations

import hashlib
import json

import httpx
import numpy as np
import pytest

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import ImageRecord
from imagesearch.search import QueryError, SearchService, check_one_query
from imagesearch.search.query import Examples, examples_from, split_negatives
from imagesearch.stores import make_store
from imagesearch.stores.local import LocalStore
from tests.support import shapes
from tests.support.cli import run_cli
from tests.support.search_api import ApiThread, settings_env
from tests.test_store_contract import settings_for

MODEL = "shapes-tiny"
WEIGHT = 0.7  # not the default: the service must read the setting


def shape_images(per_class: int, seed: int) -> tuple[list[ImageRecord], list[bytes], list[tuple[str, str]]]:
    items = shapes.dataset(n_per_class=per_class, seed=seed)
    data = [item.encode("JPEG") for item in items]
    records = [ImageRecord(id=hashlib.sha256(d).hexdigest(), captions=[item.caption], sources=["url"],
                           urls=[f"https://example.com/{n}.jpg"], width=96, height=96, format="jpeg", bytes=len(d))
               for n, (item, d) in enumerate(zip(items, data, strict=True))]
    return records, data, [(item.colour, item.shape) for item in items]


def fill(store, encoder, per_class: int = 4, seed: int = 31) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """48 shape images (fewer than the graph index's least candidates: its answers are exact too)."""
    records, data, classes = shape_images(per_class, seed)
    store.upsert_images(records)
    store.set_vectors(MODEL, [r.id for r in records], encoder.encode_images(np.stack([prepare(d, encoder.card) for d in data])))
    store.refresh()
    return records, classes


@pytest.fixture(params=["local", "local-hnsw", "elasticsearch"])
def indexed(request, tmp_path, test_model_repo):
    settings = Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model=MODEL, negative_weight=WEIGHT)
    encoder = make_encoder(settings)
    store = make_store(settings_for(request.param, request, tmp_path))
    records, classes = fill(store, encoder)
    service = SearchService(settings, encoder=encoder, store=store)
    yield service, store, encoder, records, classes
    service.close()


def oracle(store, encoder, ids: list[str], k: int, positives: list[np.ndarray], negatives: list[np.ndarray],
           weight: float) -> list[tuple[str, float]]:
    """The top k by brute force: numpy's blend of the vectors, and every stored vector's score for it."""
    query = np.mean(np.asarray(positives, np.float64), axis=0)
    if negatives:
        query -= weight * np.mean(np.asarray(negatives, np.float64), axis=0)
    query /= np.linalg.norm(query)
    scores = np.stack([store.get_vector(MODEL, i) for i in ids]).astype(np.float64) @ query
    return [(ids[i], float(scores[i])) for i in np.argsort(-scores)[:k]]


def ids_of(records, classes, colour: str, shape: str) -> list[str]:
    return [r.id for r, c in zip(records, classes, strict=True) if c == (colour, shape)]


def test_the_ranking_is_numpys_blend_of_the_positives_and_negatives(indexed):
    service, store, encoder, records, classes = indexed
    ids = [r.id for r in records]
    text = encoder.encode_texts
    vector = lambda i: store.get_vector(MODEL, i)  # noqa: E731
    red_circle, blue_triangles, green_square = ids_of(records, classes, "red", "circle")[0], \
        ids_of(records, classes, "blue", "triangle")[:2], ids_of(records, classes, "green", "square")[0]
    cases = [  # (how the service is asked, positives, negatives, the query it echoes)
        (lambda: service.search_text("a red circle", 12, examples=Examples(negative=("a red square", "a blue circle"))),
         [text(["a red circle"])[0]], [text(["a red square"])[0], text(["a blue circle"])[0]],
         {"text": "a red circle", "negative": ["a red square", "a blue circle"], "negative_weight": WEIGHT}),
        (lambda: service.search_text("a green triangle", 12, examples=Examples(
            positive_ids=tuple(blue_triangles), negative_ids=(green_square,))),
         [text(["a green triangle"])[0], *map(vector, blue_triangles)], [vector(green_square)],
         {"text": "a green triangle", "positive_ids": blue_triangles, "negative_ids": [green_square],
          "negative_weight": WEIGHT}),
        (lambda: service.search_examples(Examples(negative=("a yellow square",), positive_ids=tuple(blue_triangles)), 12),
         list(map(vector, blue_triangles)), [text(["a yellow square"])[0]],
         {"negative": ["a yellow square"], "positive_ids": blue_triangles, "negative_weight": WEIGHT}),
        (lambda: service.search_id(red_circle, 12, examples=Examples(negative_ids=(green_square,))),
         [vector(red_circle)], [vector(green_square)],
         {"image_id": red_circle, "negative_ids": [green_square], "negative_weight": WEIGHT}),
        (lambda: service.search_text("a red circle", 12, examples=Examples(positive_ids=(green_square,))),  # no negatives
         [text(["a red circle"])[0], vector(green_square)], [], {"text": "a red circle", "positive_ids": [green_square]}),
    ]
    for number, (search, positives, negatives, echo) in enumerate(cases):
        answer = search()
        expected = oracle(store, encoder, ids, 12, positives, negatives, WEIGHT)
        assert [r.id for r in answer.results] == [i for i, _ in expected], number
        assert [r.score for r in answer.results] == pytest.approx([s for _, s in expected], abs=2e-5), number
        assert answer.query == echo, number
    plain = [r.id for r in service.search_text("a red circle", 12).results]
    steered = [r.id for r in cases[0][0]().results]
    assert plain != steered  # the negatives change the ranking


def test_examples_of_images_with_several_vectors_use_their_query_vectors(tmp_path):
    """BLIP-2 keeps several vectors per image: an example image counts as their normalized mean
    (``query_vector``), as search by id does; each image still scores by its best vector."""
    from types import SimpleNamespace

    from imagesearch.stores import query_vector
    from tests.support.store_data import image_id, record, unit_vectors

    n, dim = 12, 8
    several = np.stack([unit_vectors(n, dim, seed=1), unit_vectors(n, dim, seed=2)], axis=1)
    store = LocalStore(tmp_path / "store.sqlite3")
    store.upsert_images([record(i) for i in range(n)])
    store.set_vectors("blip", [image_id(i) for i in range(n)], several)
    encoder = SimpleNamespace(card=SimpleNamespace(slug="blip"), close=lambda: None)
    service = SearchService(Settings(data_dir=tmp_path, negative_weight=WEIGHT), encoder=encoder, store=store)
    answer = service.search_examples(Examples(positive_ids=(image_id(0), image_id(1)), negative_ids=(image_id(2),)), n)
    query = np.mean([query_vector(several[0]), query_vector(several[1])], axis=0) - WEIGHT * query_vector(several[2])
    query /= np.linalg.norm(query)
    scores = (several @ query).max(axis=1)
    assert [r.id for r in answer.results] == [image_id(i) for i in np.argsort(-scores)]
    assert [r.score for r in answer.results] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)


# --- the checks, one place for the CLI and the API ----------------------------------------------------


@pytest.mark.parametrize("q, text, negatives", [
    ("beach -people", "beach", ["people"]),
    ('a beach -people -"parked cars" at dusk', "a beach at dusk", ["people", "parked cars"]),
    ("t-shirt -red", "t-shirt", ["red"]),  # a minus inside a word is the word's
    ("a - b", "a - b", []), ('a -"unclosed', 'a -"unclosed', []), ("  plain  text ", "  plain  text ", []),
])
def test_the_short_form_of_negatives(q, text, negatives):
    assert split_negatives(q) == (text, negatives)


def test_only_negatives_is_refused():
    with pytest.raises(QueryError, match="only negatives"):
        split_negatives('-people -"cars"')


def test_examples_are_checked():
    good = "a" * 64
    assert examples_from(None, [good, good], None, max_each=2) == Examples(positive_ids=(good,))  # the same id counts once
    assert not examples_from(None, None, None, max_each=2)
    for given, problem in [
        ({"negative": ["x", "y", "z"]}, "negative holds 3 entries; the limit is 2"),
        ({"positive_ids": ["a" * 64, "b" * 64, "c" * 64]}, "positive_ids holds 3 entries; the limit is 2"),
        ({"negative_ids": ["not-an-id"]}, "not an image id"),
        ({"positive_ids": [good], "negative_ids": [good]}, "in both positive_ids and negative_ids"),
    ]:
        with pytest.raises(QueryError, match=problem):
            examples_from(max_each=2, **given)
    with pytest.raises(QueryError, match="mode hybrid cannot use them"):
        examples_from(["people"], max_each=2, mode="hybrid")
    assert check_one_query(["a" * 64], text=None, image_id=None) is None  # more like these
    with pytest.raises(QueryError, match="give exactly one of text, image_id, or positive_ids alone"):
        check_one_query([], text=None, image_id=None)
    with pytest.raises(QueryError, match="exactly one"):
        check_one_query(["a" * 64], text="a", image_id="b" * 64)


def test_unknown_or_pending_examples_are_query_errors(tmp_path, test_model_repo):
    settings = Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model=MODEL)
    encoder = make_encoder(settings)
    store = LocalStore(settings.data_dir / "store.sqlite3")
    records, _ = fill(store, encoder, per_class=1)
    pending = ImageRecord(id="e" * 64, urls=["https://example.com/e.jpg"], sources=["url"], width=9, height=9,
                          format="jpeg", bytes=9)
    store.upsert_images([pending])
    service = SearchService(settings.model_copy(update={"negative_weight": 1.0}), encoder=encoder, store=store)
    for examples, reason in [(Examples(positive_ids=("f" * 64,)), "not_found"), (Examples(negative_ids=("e" * 64,)), "pending")]:
        with pytest.raises(QueryError) as error:
            service.search_text("a red circle", 5, examples=examples)
        assert error.value.reason == reason
    with pytest.raises(QueryError, match="cancel the positives out"):  # weight 1: the same text on both sides
        service.search_text("a red circle", 5, examples=Examples(negative=("a red circle",)))
    with pytest.raises(QueryError, match="empty"):
        service.search_text("a red circle", 5, examples=Examples(negative=(" ",)))
    with pytest.raises(QueryError, match="mode text cannot use them"):  # never ignored, whoever calls
        service.search_text("a red circle", 5, mode="text", examples=Examples(negative=("a square",)))
    service.close()


# --- through the API and the CLI ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("examples")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model=MODEL, search_rate_per_s=0,
                        upload_rate_per_s=0, max_query_examples=3)
    store = LocalStore(settings.data_dir / "store.sqlite3")
    records, classes = fill(store, make_encoder(settings), per_class=2, seed=32)
    store.close()
    with ApiThread(create_app(settings)) as thread:
        yield httpx.Client(base_url=thread.url, timeout=60), settings, records, classes


def test_get_short_form_post_lists_and_the_cli_agree(api):
    http, settings, records, classes = api
    env = settings_env(settings)
    short = http.get("/search", params={"q": 'a red circle -"a red square" -triangle', "k": 6})
    assert short.status_code == 200, short.text
    assert short.json()["query"] == {"text": "a red circle", "negative": ["a red square", "triangle"], "negative_weight": 0.5}
    posted = http.post("/search", json={"text": "a red circle", "negative": ["a red square", "triangle"], "k": 6}).json()
    printed = run_cli("search", "a red circle", "--not", "a red square", "--not", "triangle", "-k", "6", "--json", env=env)
    assert printed.returncode == 0, printed.stderr
    ranked = [r["id"] for r in short.json()["results"]]
    assert ranked == [r["id"] for r in posted["results"]] == [r["id"] for r in json.loads(printed.stdout)["results"]]

    like, unlike = ids_of(records, classes, "blue", "square"), ids_of(records, classes, "blue", "circle")[:1]
    posted = http.post("/search", json={"positive_ids": like, "negative_ids": unlike, "k": 5, "collapse": True}).json()
    assert posted["query"] == {"positive_ids": like, "negative_ids": unlike, "negative_weight": 0.5, "collapse": True}
    assert posted["results"][0]["id"] in like  # more like these: one of themselves first
    printed = run_cli("search", "--like", like[0], "--like", like[1], "--unlike", unlike[0], "-k", "5", "--collapse",
                      "--json", env=env)
    assert printed.returncode == 0, printed.stderr
    assert [r["id"] for r in json.loads(printed.stdout)["results"]] == [r["id"] for r in posted["results"]]
    by_id = http.post("/search", json={"image_id": like[0], "negative": ["a blue circle"], "k": 3}).json()
    assert by_id["query"] == {"image_id": like[0], "negative": ["a blue circle"], "negative_weight": 0.5}


@pytest.mark.parametrize("request_, status, code, problem", [
    ({"q": '-people -"cars"'}, 400, "invalid_query", "only negatives"),
    ({"q": "a red circle -square", "mode": "text"}, 400, "invalid_query", "mode text cannot use them"),
    ({"json": {"k": 3}}, 422, "invalid_request", "exactly one of text, image_id, image_url, or positive_ids alone"),
    ({"json": {"positive_ids": ["f" * 64]}}, 404, "not_found", "no image with id"),
    ({"json": {"text": "a", "negative_ids": ["nope"]}}, 400, "invalid_query", "not an image id"),
    ({"json": {"text": "a", "negative": ["b", "c", "d", "e"]}}, 400, "invalid_query", "the limit is 3"),
    ({"json": {"text": "a", "negative": [""]}}, 400, "invalid_query", "empty"),
    ({"json": {"text": "a", "negative": ["b"], "mode": "hybrid"}}, 400, "invalid_query", "mode hybrid"),
    ({"json": {"text": "a", "negative": "b"}}, 422, "invalid_request", "negative"),
])
def test_unusable_negatives_and_examples_are_refused_with_what_is_wrong(api, request_, status, code, problem):
    http = api[0]
    answer = http.post("/search", json=request_["json"]) if "json" in request_ else http.get("/search", params=request_)
    assert answer.status_code == status and answer.json()["error"] == code, answer.text
    assert problem in answer.json()["detail"]


@pytest.mark.parametrize("args, problem", [
    ([], "give exactly one of TEXT, --image, --id, or --like alone"),
    (["a red circle", "--like", "nope"], "not an image id"),
    (["a red circle", "--not", "x", "--mode", "text"], "mode text cannot use them"),
])
def test_the_cli_refuses_the_same(api, args, problem):
    printed = run_cli("search", *args, env=settings_env(api[1]))
    assert printed.returncode == 2 and problem in printed.stderr, printed.stderr


def test_the_schema_documents_the_new_fields(api):
    schema = api[0].get("/openapi.json").json()
    assert {"negative", "positive_ids", "negative_ids", "collapse"} <= set(
        schema["components"]["schemas"]["SearchRequest"]["properties"]
    )
    get_params = {p["name"]: p for p in schema["paths"]["/search"]["get"]["parameters"]}
    assert "collapse" in get_params and "minus" in get_params["q"]["description"]
    assert {"threshold", "model"} <= {p["name"] for p in schema["paths"]["/duplicates"]["get"]["parameters"]}
