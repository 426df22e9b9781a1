"""Each new image is decoded once when the download (or scan) and the embedder share a process: the
embedder takes the pixels of the verifying decode (ingest/handoff.py) instead of decoding the file."""

from __future__ import annotations

import asyncio
import shutil
import threading

import numpy as np
import pytest

from imagesearch.blobs import sha256_hex
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.ingest.downloader import download
from imagesearch.ingest.embed import EmbedWorker
from imagesearch.ingest.folder import scan_folder
from imagesearch.ingest.handoff import DecodedHandoff
from imagesearch.model_card import load_card
from imagesearch.stores.local import LocalStore
from tests.support import shapes
from tests.support.image_server import ImageServer


def shape_files(n_per_class: int, seed: int) -> dict[str, bytes]:
    return {f"{item.colour}-{item.shape}-{i}.jpg": item.encode("JPEG")
            for i, item in enumerate(shapes.dataset(n_per_class, seed))}


def settings_for(tmp_path, repo, name: str, **kw) -> Settings:
    return Settings(data_dir=tmp_path / name, model_repository=repo, allow_private_networks=True, batch_size=8, **kw)


def embed_stored(settings: Settings, image_ids: set[str], handoff: DecodedHandoff | None = None) -> tuple[dict, dict]:
    """Embed what the store holds; the vectors of ``image_ids`` and the failures."""
    encoder = make_encoder(settings)
    store = LocalStore(settings.data_dir / "store.sqlite3")
    try:
        summary = EmbedWorker(store, encoder, settings, handoff=handoff).run()
        found = {i: store.get_vector(encoder.card.slug, i) for i in image_ids}
        return {i: v for i, v in found.items() if v is not None}, summary.failed
    finally:
        store.close()
        encoder.close()


@pytest.mark.parametrize("source", ["folder", "urls"])
def test_the_embedder_uses_the_pixels_of_the_verifying_decode(tmp_path, test_model_repo, source):
    files = shape_files(n_per_class=2, seed=5)
    files["broken.jpg"] = next(iter(files.values()))[:300]  # truncated: refused by the verification
    files["copy.jpg"] = next(iter(files.values()))  # the same bytes twice: one image, one decode handed over
    card = load_card(test_model_repo)
    good = {sha256_hex(data) for name, data in files.items() if name != "broken.jpg"}

    def ingest(settings: Settings, handoff: DecodedHandoff | None) -> None:
        store = LocalStore(settings.data_dir / "store.sqlite3")
        try:
            if source == "folder":
                folder = tmp_path / "photos"
                folder.mkdir(exist_ok=True)
                for name, data in files.items():
                    (folder / name).write_bytes(data)
                scan_folder(folder, store, settings, handoff=handoff)
            else:
                with ImageServer() as server:
                    urls = [server.add(f"/{name}", data) for name, data in files.items()]
                    summary = asyncio.run(download(urls, store, settings, handoff=handoff))
                assert summary.failed == {"not_an_image": 1}, summary.describe()
        finally:
            store.close()

    handed = settings_for(tmp_path, test_model_repo, "handed")
    handoff = DecodedHandoff([card], draft=handed.jpeg_draft, max_bytes=handed.handoff_mb * 2**20)
    ingest(handed, handoff)
    new_images = len(good)
    assert new_images == len(files) - 2  # less the broken file and the copy
    assert handoff.handed >= new_images and handoff.taken == 0
    # The image files are gone: an embedder that read them would fail every image (missing_file).
    shutil.rmtree(handed.images_dir)
    vectors, failed = embed_stored(handed, good, handoff)
    assert failed == {} and len(vectors) == new_images
    assert handoff.taken == new_images and handoff.dropped == 0

    # The same images decoded from their files give the same vectors.
    reference = settings_for(tmp_path, test_model_repo, "reference")
    ingest(reference, None)
    expected, failed = embed_stored(reference, good)
    assert failed == {} and expected.keys() == vectors.keys()
    for image_id, vector in expected.items():
        np.testing.assert_allclose(vectors[image_id], vector, atol=1e-5)


def test_a_full_handoff_holds_the_scan_until_the_embedder_takes_and_a_closed_one_holds_nothing(tmp_path, test_model_repo):
    files = shape_files(n_per_class=3, seed=6)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    card = load_card(test_model_repo)
    one_image = card.image_size**2 * 3
    settings = settings_for(tmp_path, test_model_repo, "var", download_write_batch=2)
    # Room for 3 images while the scan finds 36: it must wait for the embedder, never drop.
    handoff = DecodedHandoff([card], draft=True, max_bytes=3 * one_image)
    store = LocalStore(settings.data_dir / "store.sqlite3")
    encoder = make_encoder(settings)
    scanned = threading.Event()
    scan = threading.Thread(target=lambda: (scan_folder(folder, store, settings, handoff=handoff), scanned.set()))
    try:
        scan.start()
        summary = EmbedWorker(store, encoder, settings, handoff=handoff).run(until=scanned, poll_s=0.05)
        scan.join(60)
    finally:
        encoder.close()
        store.close()
    assert summary.embedded == len(files) and summary.failed == {}
    assert handoff.taken == len(files) and handoff.dropped == 0

    # No embedder: after wait_s without room the oldest pixels go, so the scan never stalls for long.
    alone = DecodedHandoff([card], draft=True, max_bytes=one_image, wait_s=0.2)
    store = LocalStore(tmp_path / "alone.sqlite3")
    try:
        scan_folder(folder, store, settings_for(tmp_path, test_model_repo, "alone"), handoff=alone)
        assert alone.handed == len(files) and alone.dropped == len(files) - 1
        # Closed (the embedder has ended): it verifies as before and keeps nothing.
        alone.close()
        info = alone.verify(next(iter(files.values())), settings.max_image_pixels)
        assert (info.format, alone.handed) == ("jpeg", len(files))
        assert alone.take(card.slug, sha256_hex(next(iter(files.values())))) is None
    finally:
        store.close()
