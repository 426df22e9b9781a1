"""Ingest and photos: HEIC and AVIF (made with pillow-heif and Pillow) through the downloader, from a
real local HTTP server, with their EXIF; and records stored before ingest read EXIF getting their
metadata at the next ingest from their stored files, without a download and without being embedded
again, in both stores."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid

import numpy as np
import pytest

from imagesearch.blobs import FolderBlobStore
from imagesearch.config import Settings
from imagesearch.ingest.downloader import download
from imagesearch.records import ImageRecord, SearchFilters
from imagesearch.stores import make_store
from imagesearch.stores.local import LocalStore
from tests.support.photos import Exif, photo
from tests.support.search_api import ingest
from tests.support.store_data import unit_vectors
from tests.support.test_model import EMBED_DIM

MODEL = "shapes-tiny"


def test_heic_and_avif_are_downloaded_with_their_metadata(tmp_path, image_server):
    settings = Settings(data_dir=tmp_path / "var", allow_private_networks=True)
    made = {
        "heif": photo(Exif("2022:06:01 12:00:00", "+02:00", "Apple", "iPhone 13", 51.5, -0.12), "HEIF"),
        "avif": photo(Exif("2021:01:01 08:00:00", None, "Google", "Pixel 8", -33.86, 151.21), "AVIF"),
    }
    urls = {fmt: image_server.add(f"/p/{fmt}", data, "application/octet-stream") for fmt, data in made.items()}  # no hint
    store = LocalStore(tmp_path / "store.sqlite3")
    summary = asyncio.run(download(list(urls.values()), store, settings))
    assert summary.downloaded == 2 and not summary.failed, summary
    for fmt, data in made.items():
        stored = store.get(hashlib.sha256(data).hexdigest())
        assert stored is not None and stored.format == fmt and stored.urls == [urls[fmt]]
        assert stored.photo is not None and stored.photo.camera_make in ("Apple", "Google")
        path = FolderBlobStore(settings.images_dir).path(stored.id, fmt)
        assert path.suffix == {"heif": ".heic", "avif": ".avif"}[fmt] and path.read_bytes() == data
    assert store.get(hashlib.sha256(made["avif"]).hexdigest()).photo.taken_at.tzinfo is None  # no offset: naive
    store.close()


@pytest.mark.parametrize("kind", ["local", "elasticsearch"])
def test_records_stored_before_exif_was_read_get_it_at_the_next_ingest_without_embedding_again(
        kind, request, tmp_path, test_model_repo):
    settings = Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model=MODEL)
    if kind == "elasticsearch":
        node = request.getfixturevalue("es_node")
        settings = settings.model_copy(update={"store": "elasticsearch", "es_url": node.url, "es_index_type": "hnsw",
                                               "es_index_prefix": f"b{uuid.uuid4().hex[:10]}"})
    tags = [Exif("2020:08:08 08:08:08", "+08:00", "Canon", "Canon EOS R5", 48.85, 2.35),
            Exif(None, None, "Apple", "iPhone 13"), Exif(), Exif("2019:01:01 00:00:00", None, "Canon", "EOS M")]
    data = [photo(t, fmt, seed=i) for i, (t, fmt) in enumerate(zip(tags, ["JPEG", "HEIF", "AVIF", "JPEG"], strict=True))]
    ids = [hashlib.sha256(d).hexdigest() for d in data]
    blobs = FolderBlobStore(settings.images_dir)
    # As an ingest before EXIF was read left them: files stored, records without photo metadata, embedded.
    # The last one's file is gone (deleted by hand): nothing to read it from.
    old = [ImageRecord(id=i, paths=[f"/old/{n}"], sources=["folder"], width=64, height=48, format=fmt, bytes=len(d))
           for n, (i, d, fmt) in enumerate(zip(ids, data, ["jpeg", "heif", "avif", "jpeg"], strict=True))]
    for record, d in zip(old[:3], data[:3], strict=True):
        blobs.put(d, record.format, record.id)
    vectors = unit_vectors(4, EMBED_DIM, seed=61)  # not what the model would give: a new embedding would show
    with contextlib.closing(make_store(settings)) as store:
        store.upsert_images(old)
        store.set_vectors(MODEL, ids, vectors)

    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "new.jpg").write_bytes(photo(Exif("2024:02:02 10:00:00", "+00:00", "Canon", "EOS M"), seed=9))
    out = ingest(settings, "--folder", str(folder))
    assert "photo metadata: read from 3 stored images (1 with a date taken), 1 without their image" in out, out
    assert "embed: 1 embedded" in out and "store: 5 images, 5 embedded, 0 pending" in out, out

    with contextlib.closing(make_store(settings)) as store:
        store.refresh()
        for record_id, written in zip(ids[:3], tags[:3], strict=True):
            read = store.get(record_id).photo
            assert read is not None and read.taken_at == written.taken_at
            assert (read.camera_make, read.camera_model) == (written.make, written.model)
        assert store.get(ids[3]).photo is None  # left unread: the next ingest tries again
        for record_id, vector in zip(ids, vectors, strict=True):
            np.testing.assert_array_equal(store.get_vector(MODEL, record_id), vector)  # not embedded again
        canon = store.search(MODEL, vectors[0], 10, SearchFilters(camera="canon", taken_before="2021-01-01"))
        assert [h.id for h in canon] == [ids[0]]  # in what the filters read too (Elasticsearch: the vector index)
    again = ingest(settings, "--folder", str(folder))
    assert "photo metadata: read from 0 stored images (0 with a date taken), 1 without their image" in again, again
