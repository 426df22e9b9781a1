"""Blob storage in an S3-compatible bucket, against a real server (SeaweedFS, tests/support/seaweedfs.py):
the folder's guarantees, the whole product on it (ingest, search, `/images/{id}`, removal), and the
server going away in the middle of a download."""

from __future__ import annotations

import os

import httpx
import pytest
from pydantic import SecretStr

from imagesearch.api.app import create_app
from imagesearch.blobs import THUMBNAIL, BlobMissing, FolderBlobStore, make_blob_store, sha256_hex
from imagesearch.config import Settings
from imagesearch.stores.local import LocalStore
from tests.support.cli import run_cli, start_cli
from tests.support.image_server import Reply
from tests.support.net import wait_until
from tests.support.search_api import ApiThread, make_shapes, stored_images, write_folder
from tests.support.seaweedfs import in_bucket, objects, s3_env, thumbnail_objects


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_the_folder_and_the_bucket_keep_the_same_guarantees(kind, tmp_path, request):
    if kind == "s3":
        blobs = make_blob_store(in_bucket(Settings(data_dir=tmp_path), request.getfixturevalue("s3_server")))
    else:
        blobs = FolderBlobStore(tmp_path / "images")
    data = [os.urandom(2000 + i) for i in range(5)]
    ids = [sha256_hex(d) for d in data]
    stored, error = blobs.put_many([(d, "png", None) for d in data] + [(data[0], "png", ids[0])])
    assert error is None and stored == ids + [ids[0]]  # the same bytes twice: one blob, both reported
    assert blobs.put(data[1], "png") == ids[1]  # idempotent
    assert [blobs.get(i, "png") for i in ids] == data
    reader = blobs.open(ids[2], "png")
    assert reader.size == len(data[2]) and b"".join(reader.chunks) == data[2]
    reader.close()
    thumbnail = os.urandom(300)
    assert blobs.put(thumbnail, THUMBNAIL, ids[0]) == ids[0] and blobs.get(ids[0], THUMBNAIL) == thumbnail
    assert blobs.get(ids[0], "png") == data[0]  # beside the image, under a name of its own
    assert blobs.delete(ids[0]) == 1 and blobs.delete(ids[0]) == 0  # the image's blob is counted, its thumbnail goes too
    for read in (blobs.get, blobs.open):
        for fmt in ("png", THUMBNAIL):
            with pytest.raises(BlobMissing):
                read(ids[0], fmt)
    with pytest.raises(ValueError, match="not an image id"):
        blobs.get("../" + "0" * 61, "png")
    assert blobs.sweep_leftovers() == 0


def test_an_ingest_into_a_bucket_is_searched_served_and_removed(s3_server, settings, tmp_path):
    """`imagesearch ingest --folder` stores the files and their thumbnails in the bucket only; the
    embedder reads them from there; the API serves them with the folder's headers; removal deletes the
    objects."""
    settings = in_bucket(settings, s3_server)
    shapes = make_shapes(1, seed=21)
    done = run_cli("ingest", "--folder", str(write_folder(tmp_path / "photos", shapes)), env=s3_env(settings))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"embed: {len(shapes)} embedded" in done.stdout, done.stdout
    keys = objects(s3_server, settings)
    assert len(keys) == len(shapes) and not list(settings.images_dir.rglob("*.jpg"))
    assert thumbnail_objects(s3_server, settings) == sorted(f"images/thumbnails/{k[7:9]}/{k[10:74]}.webp" for k in keys)
    with ApiThread(create_app(settings)) as api, httpx.Client(base_url=api.url, timeout=60) as http:
        top = http.get("/search", params={"q": "a red circle", "k": 1}).json()["results"][0]
        response = http.get(top["image_url"])
        assert response.status_code == 200 and sha256_hex(response.content) == top["id"]
        assert response.headers["etag"] == f'"{top["id"]}"' and "immutable" in response.headers["cache-control"]
        assert response.headers["content-type"] == "image/jpeg"
        assert http.get(top["image_url"], headers={"If-None-Match": response.headers["etag"]}).status_code == 304
        thumbnail = http.get(f"{top['image_url']}/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"
        assert thumbnail.headers["etag"] == f'"{top["id"]}-thumbnail"' and thumbnail.content[8:12] == b"WEBP"
        assert int(thumbnail.headers["content-length"]) == len(thumbnail.content)
        bucket, key = settings.blobs.removeprefix("s3://").split("/")[0], f"images/thumbnails/{top['id'][:2]}/{top['id']}.webp"
        s3_server.client().delete_object(Bucket=bucket, Key=key)  # as for an image stored before thumbnails were made
        assert http.get(f"{top['image_url']}/thumbnail").content == thumbnail.content  # made again on request...
        assert key in thumbnail_objects(s3_server, settings)  # ...and kept
        assert http.delete(top["image_url"]).json() == {"removed": top["id"], "records": 1, "files": 1}
        assert http.get(top["image_url"]).status_code == 404
        assert http.get(f"{top['image_url']}/thumbnail").status_code == 404
    assert len(objects(s3_server, settings)) == len(thumbnail_objects(s3_server, settings)) == len(shapes) - 1
    assert not [key for key in thumbnail_objects(s3_server, settings) if top["id"] in key]


def test_the_storage_going_away_mid_download_stops_clearly_and_a_rerun_completes(s3_server, settings, image_server):
    """SeaweedFS is stopped while URLs are being downloaded: the ingest stops with a message that says
    what to do; every record it wrote has its object (nothing half-stored); once the server is back,
    the same command stores and embeds the rest, each image once."""
    settings = in_bucket(settings, s3_server)
    shapes = make_shapes(2, seed=22)
    urls = [image_server.add_sequence(f"/slow/{i}.jpg", [Reply(200, s.data, body_delay_s=0.3, body_delay_after=100)])
            for i, s in enumerate(shapes)]
    url_list = settings.data_dir.parent / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")
    env = s3_env(settings, IMAGESEARCH_DEPENDENCY_WAIT_S="1", IMAGESEARCH_DOWNLOAD_CONCURRENCY="2",
                 IMAGESEARCH_DOWNLOAD_WRITE_BATCH="2", IMAGESEARCH_DECODE_WORKERS="1")
    first = start_cli("ingest", "--urls", str(url_list), env=env)
    try:
        database = settings.data_dir / "store.sqlite3"
        wait_until(lambda: first.poll() is not None or (database.exists() and stored_images(database) >= 4), 60,
                   "the first images stored")
        s3_server.stop()
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
        s3_server.start()
    assert first.returncode == 1, output
    assert "error: the image storage s3://" in output and "run the ingest again" in output, output
    store = LocalStore(settings.data_dir / "store.sqlite3")
    try:
        kept = [r for r in (store.get(sha256_hex(s.data)) for s in shapes) if r is not None]
        assert 4 <= len(kept) < len(shapes)
    finally:
        store.close()
    keys = set(objects(s3_server, settings))
    assert all(f"images/{r.id[:2]}/{r.id}.jpg" in keys for r in kept)  # no record without its object

    done = run_cli("ingest", "--urls", str(url_list), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(kept)} already known" in done.stdout
    store = LocalStore(settings.data_dir / "store.sqlite3")
    try:
        counts = store.counts("shapes-tiny")
        assert (counts.images, counts.embedded, counts.pending, counts.failed_urls) == (len(shapes), len(shapes), 0, 0)
        assert all(store.get(sha256_hex(s.data)).urls == [url] for s, url in zip(shapes, urls, strict=True))
    finally:
        store.close()
    assert len(objects(s3_server, settings)) == len(shapes)


def test_the_api_answers_503_at_once_while_the_storage_cannot_be_reached(settings):
    """No S3 server at the endpoint: /images/{id} of an indexed image (and its thumbnail) is a 503 with
    Retry-After (the API does not wait the ingest's dependency_wait_s), and so is its removal, whose
    first part (the record) is done: the same removal run again once the storage is back deletes the
    object."""
    from imagesearch.records import ImageRecord
    from imagesearch.stores import make_store
    from tests.support.net import free_port

    settings = settings.model_copy(update={"blobs": "s3://nowhere/images", "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
                                           "s3_access_key_id": "k", "s3_secret_access_key": SecretStr("s")})
    image_id = sha256_hex(b"an image that never reached the bucket")
    store = make_store(settings)
    store.upsert_images([ImageRecord(id=image_id, width=8, height=8, format="jpeg", bytes=38, sources=["upload"])])
    store.close()
    with ApiThread(create_app(settings)) as api, httpx.Client(base_url=api.url, timeout=60) as http:
        for method, path in (("GET", f"/images/{image_id}"), ("GET", f"/images/{image_id}/thumbnail"),
                             ("DELETE", f"/images/{image_id}")):
            answer = http.request(method, path)
            assert answer.status_code == 503 and answer.json()["error"] == "blobs_unavailable", answer.text
            assert answer.headers["retry-after"] and answer.elapsed.total_seconds() < 10
    store = make_store(settings)
    try:
        assert store.get(image_id) is None and store.removed_ids([image_id]) == {image_id}
    finally:
        store.close()
