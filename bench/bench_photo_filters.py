"""What the photo filters (date, camera, place) and the date sort add to a search (issue 31): the
store's part of a vector query (k=10) at 100k photos in the local store, exact and through its graph
index. The date sort runs in the search service over the best IMAGESEARCH_SORT_WINDOW matches; the
text encoder's time is the same for every query, so it is left out.

    .venv/bin/python -m bench.bench_photo_filters [--size 100000]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.bench_store import DIM, EXACT, MODEL, ids_for
from bench.common import bench_vectors, cpu_description, latencies_ms, p50, pct, save_results
from imagesearch.config import Settings
from imagesearch.records import GeoPoint, ImageRecord, PhotoMetadata, SearchFilters
from imagesearch.search import SearchService
from imagesearch.stores.local import LocalStore

QUERIES = 200  # per case, each query vector new (the graph index keeps the candidates of repeated ones)
CAMERAS = [(make, f"{make} {model}") for make in ("Canon", "Apple", "Google", "Sony", "Fujifilm")
           for model in ("A", "B", "C", "D")]  # 20 cameras: one is 5% of the photos
CITIES = [(48.8566, 2.3522), (40.7128, -74.0060), (35.6762, 139.6503), (-33.8688, 151.2093), (51.5074, -0.1278)]
START = datetime(2019, 1, 1, tzinfo=timezone.utc)
CASES = {  # name -> (filters, sort)
    "none": (None, "relevance"),
    "format (an older filter; all pass)": (SearchFilters(format=["jpeg"]), "relevance"),  # for comparison
    "date: one year (~20%)": (SearchFilters(taken_after="2021-01-01", taken_before="2021-12-31"), "relevance"),
    "date: one month (~1.7%)": (SearchFilters(taken_after="2021-06-01", taken_before="2021-06-30"), "relevance"),
    "camera (~5%)": (SearchFilters(camera="canon canon a"), "relevance"),
    "camera make (~20%)": (SearchFilters(camera="apple"), "relevance"),
    "place: 5 km (~4%)": (SearchFilters(near=list(CITIES[0]), within_km=5), "relevance"),
    "date + camera + place": (SearchFilters(taken_after="2020-01-01", camera="apple", near=list(CITIES[1]), within_km=25),
                              "relevance"),
    "sort newest (window 1000)": (None, "newest"),
    "sort newest + camera": (SearchFilters(camera="apple"), "newest"),
}


def photos(n: int, rng: np.random.Generator) -> list[PhotoMetadata]:
    """Five years of dates, 20 cameras, positions around five cities (half within ~20 km); 10% without metadata."""
    days = rng.uniform(0, 5 * 365, n)
    cameras = rng.integers(0, len(CAMERAS), n)
    cities = rng.integers(0, len(CITIES), n)
    spread = rng.exponential(10.0, n) / 111.0  # degrees: most within a few tens of km
    angle = rng.uniform(0, 2 * np.pi, n)
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(PhotoMetadata())
            continue
        lat = CITIES[cities[i]][0] + spread[i] * np.sin(angle[i])
        lon = CITIES[cities[i]][1] + spread[i] * np.cos(angle[i]) / np.cos(np.radians(CITIES[cities[i]][0]))
        out.append(PhotoMetadata(taken_at=START + timedelta(days=float(days[i])), camera_make=CAMERAS[cameras[i]][0],
                                 camera_model=CAMERAS[cameras[i]][1], location=GeoPoint(lat=lat, lon=float(lon))))
    return out


def build(path: Path, n: int) -> None:
    store = LocalStore(path)
    vectors = bench_vectors("clustered", n, DIM, seed=1)  # CLIP-like: what the graph index expects
    made = photos(n, np.random.default_rng(2))
    for start in range(0, n, 20_000):
        ids = ids_for(start, min(20_000, n - start))
        store.upsert_images([ImageRecord(id=i, urls=[f"https://example.com/{i[:12]}.jpg"], sources=["url"], width=4032,
                                         height=3024, format="jpeg", bytes=2_000_000, photo=made[start + j])
                             for j, i in enumerate(ids)])
        store.set_vectors(MODEL, ids, vectors[start : start + len(ids)])
    store.refresh()  # builds and saves the graph index (past its threshold)
    store.close()


def measure(path: Path, index_min_vectors: int) -> dict[str, list[float]]:
    store = LocalStore(path, index_min_vectors=index_min_vectors)
    encoder = SimpleNamespace(card=SimpleNamespace(slug=MODEL), close=lambda: None)  # query vectors are given
    service = SearchService(Settings(data_dir=path.parent), encoder=encoder, store=store)
    queries = iter(bench_vectors("clustered", QUERIES * (len(CASES) + 1), DIM, seed=100))
    service.search_vector(next(queries), {}, 10)  # open the matrix or the graph index
    found = {}
    for name, (filters, sort) in CASES.items():
        found[name] = latencies_ms(
            lambda _, filters=filters, sort=sort: service.search_vector(next(queries), {}, 10, filters, sort=sort), QUERIES)
    store.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    n = parser.parse_args().size
    print(f"CPU: {cpu_description()}; {n} photos, {DIM}-d vectors, k=10, {QUERIES} queries per case", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite3"
        build(path, n)
        for search, threshold in (("exact", EXACT), ("graph index", 0)):
            found = measure(path, threshold)
            base = p50(found["none"])
            print(f"\n{search}:")
            for name, values in found.items():
                added = p50(values) - base
                print(f"  {name:<36} p50 {p50(values):6.1f} ms  p99 {pct(values, 99):6.1f} ms  added {added:+6.1f} ms")
                rows.append({"search": search, "case": name, "p50_ms": p50(values), "p99_ms": pct(values, 99),
                             "added_p50_ms": added})
    save_results("bench_photo_filters", rows, parameters={"images": n, "store": "local", "k": 10, "dim": DIM,
                                                          "sort_window": Settings().sort_window})


if __name__ == "__main__":
    main()
