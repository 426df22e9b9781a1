"""Photo metadata end to end, in both stores: photos with EXIF that Pillow wrote (JPEG, HEIC, AVIF;
dates with and without offsets, several cameras, GPS positions at known distances) ingested by the
real `imagesearch ingest` from a folder and from URLs on a local HTTP server, then searched through
the API (GET, POST, an uploaded HEIC) and the CLI with the date, camera and place filters, sorted
by date and paged. The oracles: the tags written, Python's dates, numpy's distances."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

import httpx
import pytest

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from tests.support.cli import run_cli
from tests.support.image_server import ImageServer
from tests.support.photos import PARIS, Exif, distance_km, offset_position, photo
from tests.support.search_api import ApiThread, ingest, settings_env

# (format, tags, where it comes from); positions at known distances from PARIS
KM = {"a": 0.4, "b": 2.5, "c": 4.2, "d": 7.5, "e": 30.0}
AT = {name: offset_position(*PARIS, km, 37.0 * i) for i, (name, km) in enumerate(KM.items())}
PHOTOS = [
    ("JPEG", Exif("2021:05:01 10:00:00", "+02:00", "Canon", "Canon EOS R5", *AT["a"]), "folder"),
    ("JPEG", Exif("2021:05:01 09:30:00", None, "Canon", "Canon EOS R5", *AT["d"]), "folder"),  # naive: as UTC
    ("HEIF", Exif("2022:01:15 18:45:10", "-05:00", "Apple", "iPhone 13", *AT["b"]), "folder"),
    ("HEIF", Exif("2019:07:04 12:00:00", "+09:00", "Apple", "iPhone 15 Pro", None, None), "folder"),
    ("AVIF", Exif("2020:11:30 07:15:00", None, "Google", "Pixel 8", *AT["c"]), "folder"),
    ("AVIF", Exif(None, None, "Google", "Pixel 8", *AT["e"]), "folder"),  # no date
    ("JPEG", Exif(), "folder"),  # no metadata at all
    ("HEIF", Exif("2023:03:03 03:03:03", "+00:00", "Apple", "iPhone 13", *AT["a"]), "url"),
    ("AVIF", Exif("2018:02:02 02:02:02", "+01:00", "NIKON CORPORATION", "NIKON Z 6", None, None), "url"),
    ("JPEG", Exif(None, None, None, None, *AT["b"]), "url"),  # a position alone
]
SUFFIX = {"JPEG": "jpg", "HEIF": "heic", "AVIF": "avif"}
CONTENT_TYPE = {"JPEG": "image/jpeg", "HEIF": "image/heic", "AVIF": "image/avif"}


class Photos:
    def __init__(self, url: str, settings: Settings):
        self.url, self.settings = url, settings
        self.http = httpx.Client(base_url=url, timeout=60)
        self.data = [photo(tags, fmt, colour=(30 * i % 255, 90, 200 - 15 * i), seed=i) for i, (fmt, tags, _) in enumerate(PHOTOS)]
        self.ids = [hashlib.sha256(d).hexdigest() for d in self.data]
        self.tags = {image_id: tags for image_id, (_, tags, _) in zip(self.ids, PHOTOS, strict=True)}

    def ids_where(self, keep) -> set[str]:
        return {i for i, tags in self.tags.items() if keep(tags)}

    def get(self, **params) -> dict:
        answer = self.http.get("/search", params={"q": "a photo", "k": 50, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module", params=["local", "elasticsearch"])
def photos(request, tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("photos")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny", allow_private_networks=True,
                        search_rate_per_s=0, upload_rate_per_s=0, max_k=50)
    if request.param == "elasticsearch":
        node = request.getfixturevalue("es_node")
        settings = settings.model_copy(update={"store": "elasticsearch", "es_url": node.url, "es_index_type": "hnsw",
                                               "es_index_prefix": f"p{uuid.uuid4().hex[:10]}"})
    made = Photos("", settings)
    folder = root / "folder"
    folder.mkdir()
    with ImageServer() as server:
        lines = []
        for i, ((fmt, _, source), data) in enumerate(zip(PHOTOS, made.data, strict=True)):
            if source == "folder":
                (folder / f"photo-{i}.{SUFFIX[fmt].upper() if i % 2 else SUFFIX[fmt]}").write_bytes(data)
            else:
                lines.append(server.add(f"/phone/{i}.{SUFFIX[fmt]}", data, CONTENT_TYPE[fmt]))
        (root / "urls.txt").write_text("\n".join(lines) + "\n")
        out = ingest(settings, "--urls", str(root / "urls.txt"), "--folder", str(folder))
        assert "3 downloaded" in out and "stored 7" in out, out
        with ApiThread(create_app(settings)) as thread:
            made.url, made.http = thread.url, httpx.Client(base_url=thread.url, timeout=60)
            yield made


def test_every_format_is_stored_with_what_its_exif_says(photos):
    results = {r["id"]: r for r in photos.get()["results"]}
    assert set(results) == set(photos.ids)
    for image_id, (fmt, tags, _) in zip(photos.ids, PHOTOS, strict=True):
        result = results[image_id]
        assert result["format"] == fmt.lower()
        taken = datetime.fromisoformat(result["taken_at"]) if result["taken_at"] else None
        assert taken == tags.taken_at and (taken is None or (taken.tzinfo is None) == (tags.offset is None))
        assert result["camera"] == (None if tags.make is None else tags.model if tags.model.startswith(tags.make)
                                    else f"{tags.make} {tags.model}")
        if tags.lat is None:
            assert result["location"] is None
        else:
            assert result["location"] == pytest.approx({"lat": tags.lat, "lon": tags.lon}, abs=1e-6)
        served = photos.http.get(result["image_url"])
        assert served.status_code == 200 and served.content == photos.data[photos.ids.index(image_id)]
        assert served.headers["content-type"] == CONTENT_TYPE[fmt]


def filter_cases(photos: Photos) -> list[tuple[dict, set[str]]]:
    def utc(tags):
        return tags.utc.isoformat() if tags.utc else None

    near = {i for i, tags in photos.tags.items() if tags.lat is not None and distance_km(*PARIS, tags.lat, tags.lon) <= 5}
    return [
        ({"taken_after": "2021-05-01"}, photos.ids_where(lambda t: t.utc is not None and utc(t) >= "2021-05-01")),
        ({"taken_before": "2021-05-01"}, photos.ids_where(lambda t: t.utc is not None and utc(t) < "2021-05-02")),
        (
            {"taken_after": "2021-05-01T09:00:00+01:00", "taken_before": "2021-05-01T09:45:00Z"},  # 08:00Z to 09:45Z
            photos.ids_where(lambda t: t.taken is not None and t.taken.startswith("2021:05:01")),
        ),
        ({"camera": "canon"}, photos.ids_where(lambda t: t.make == "Canon")),
        ({"camera": "apple iphone 13"}, photos.ids_where(lambda t: t.model == "iPhone 13")),
        ({"camera": "Pixel 8", "taken_after": "2000-01-01"}, {photos.ids[4]}),
        ({"near": f"{PARIS[0]},{PARIS[1]}", "within_km": 5}, near),
        (
            {"near": f"{PARIS[0]},{PARIS[1]}", "within_km": 5, "camera": "apple"},
            near & photos.ids_where(lambda t: t.make == "Apple"),
        ),
    ]


def test_filters_through_get_post_and_the_cli(photos):
    env = settings_env(photos.settings)
    for params, expected in filter_cases(photos):
        assert expected and len(expected) < len(photos.ids), params  # each case keeps some and drops some
        assert {r["id"] for r in photos.get(**params)["results"]} == expected, params
        body = {**params}
        if "near" in body:
            lat, lon = map(float, body.pop("near").split(","))
            body["near"] = {"lat": lat, "lon": lon}
        posted = photos.http.post("/search", json={"text": "a photo", "k": 50, "filters": body})
        assert posted.status_code == 200 and {r["id"] for r in posted.json()["results"]} == expected, posted.text
        flags = [part for name, value in params.items() for part in (f"--{name.replace('_', '-')}", str(value))]
        printed = run_cli("search", "a photo", "-k", "50", "--json", *flags, env=env)
        assert printed.returncode == 0, printed.stderr
        assert {r["id"] for r in json.loads(printed.stdout)["results"]} == expected, params


def test_sorted_by_date_in_pages_through_the_api_and_the_cli(photos):
    relevance = [r["id"] for r in photos.get()["results"]]
    dated = sorted((i for i in photos.ids if photos.tags[i].utc), key=lambda i: photos.tags[i].utc)
    undated = [i for i in relevance if photos.tags[i].utc is None]
    env = settings_env(photos.settings)
    for sort, expected in (("newest", dated[::-1] + undated), ("oldest", dated + undated), ("relevance", relevance)):
        pages, offset = [], 0
        while offset is not None:
            answer = photos.get(sort=sort, k=3, offset=offset) if len(pages) % 2 == 0 else photos.http.post(
                "/search", json={"text": "a photo", "k": 3, "sort": sort, "offset": offset}).json()
            pages.append([r["id"] for r in answer["results"]])
            offset = answer["next_offset"]
        assert sum(pages, []) == expected, sort  # no overlap, no gap, page after page
        assert len(pages) == 4 and [len(p) for p in pages] == [3, 3, 3, 1]
        printed = run_cli("search", "a photo", "-k", "4", "--sort", sort, "--offset", "4", env=env)
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        assert [line.split()[2] for line in lines[:4]] == [i[:12] for i in expected[4:8]]
        assert lines[0].startswith("  5 ") and lines[-1] == "more: --offset 8", printed.stdout
    assert photos.get(sort="oldest", offset=2, k=2)["query"] == {"text": "a photo", "sort": "oldest", "offset": 2}


def test_an_uploaded_heic_with_form_filters(photos):
    query = photo(Exif("2024:01:01 00:00:00", "+00:00", "Apple", "iPhone 13"), "HEIF", colour=(90, 90, 90), seed=99)
    answer = photos.http.post("/search/image", files={"file": ("query.heic", query, "image/heic")},
                              data={"k": "10", "camera": "APPLE", "sort": "oldest"})
    assert answer.status_code == 200, answer.text
    expected = sorted(photos.ids_where(lambda t: t.make == "Apple"), key=lambda i: photos.tags[i].utc)
    assert [r["id"] for r in answer.json()["results"]] == expected and answer.json()["next_offset"] is None
    avif = photo(Exif(), "AVIF", colour=(10, 200, 10), seed=98)
    assert photos.http.post("/search/image", files={"file": ("q.avif", avif, "image/avif")}, data={"k": "2"}).status_code == 200


@pytest.mark.parametrize("params, problem", [
    ({"near": "48.8,2.3"}, "near and within_km go together"), ({"near": "north", "within_km": 2}, "LAT,LON"),
    ({"taken_after": "soon"}, "taken_after"), ({"taken_after": "2022-01-02", "taken_before": "2022-01-01"}, "before"),
    ({"sort": "random"}, "sort"), ({"offset": -1}, "offset"), ({"offset": 9995, "k": 10}, "offset + k must be at most 10000"),
])
def test_unusable_values_are_refused_with_what_is_wrong(photos, params, problem):
    answer = photos.http.get("/search", params={"q": "a photo", **params})
    assert answer.status_code in (400, 422) and problem in answer.json()["detail"], answer.text
    flags = [part for name, value in params.items() for part in (f"--{name.replace('_', '-')}", str(value)) if name != "k"]
    printed = run_cli("search", "a photo", *flags, env=settings_env(photos.settings))
    assert printed.returncode == 2 and (problem in printed.stderr or "invalid choice" in printed.stderr), printed.stderr
    assert "Traceback" not in printed.stderr
    body = {"text": "a photo", "filters": {"near": {"lat": 95, "lon": 0}, "within_km": 1}}
    assert photos.http.post("/search", json=body).status_code == 422


def test_the_schema_documents_the_new_parameters(photos):
    schema = photos.http.get("/openapi.json").json()
    get_params = {p["name"] for p in schema["paths"]["/search"]["get"]["parameters"]}
    assert {"taken_after", "taken_before", "camera", "near", "within_km", "sort", "offset"} <= get_params
    components = schema["components"]["schemas"]
    assert {"taken_after", "camera", "near", "within_km"} <= set(components["Filters"]["properties"])
    assert {"sort", "offset"} <= set(components["SearchRequest"]["properties"])
    assert {"taken_at", "camera", "location"} <= set(components["SearchResult"]["properties"])
    assert "next_offset" in components["SearchResponse"]["properties"]
