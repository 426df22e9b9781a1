"""Thumbnails (imagesearch/thumbnails.py): made by Pillow from real images of every mode and format
the system takes, against Pillow's own EXIF orientation as the oracle; made by the real `imagesearch
ingest` (a folder and URLs) without any request, served by the API with their caching headers, made
on first request for an image stored without one, and deleted with their image."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as samples

from imagesearch.api.app import create_app
from imagesearch.blobs import THUMBNAIL, FolderBlobStore, blob_name
from imagesearch.config import Settings
from imagesearch.preprocess import ImageDecodeError
from imagesearch.thumbnails import make_thumbnail, store_thumbnails, thumbnail, thumbnail_items
from tests.support.image_server import ImageServer
from tests.support.photos import Exif, photo
from tests.support.search_api import ApiThread, ingest, make_shapes, write_folder

ORIENTATION = 0x0112  # the EXIF tag; 6: the camera was turned a quarter clockwise, show it turned back


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def coffee(size: tuple[int, int]) -> Image.Image:
    """scikit-image's coffee cup photo (600x400, no symmetry a turn could hide) at ``size``, with
    sensor-like noise so that a large one weighs what a phone photo does."""
    img = Image.fromarray(samples.coffee()).resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def turned_photo() -> bytes:
    """A 1200x800 JPEG whose EXIF says: show me turned a quarter (Orientation 6), i.e. 800x1200."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return encode(coffee((1200, 800)), "JPEG", quality=90, exif=exif.tobytes())


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and img.format == "WEBP"
    img.load()
    return img


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a.convert("RGB"), np.float32) - np.asarray(b.convert("RGB"), np.float32)).mean())


# --- making one ---------------------------------------------------------------------------------


def test_the_longest_side_is_the_size_the_aspect_is_kept_and_nothing_is_upscaled():
    for (width, height), expected in (((1200, 800), (320, 213)), ((500, 1000), (160, 320)), ((100, 60), (100, 60))):
        thumb = decoded(make_thumbnail(encode(coffee((width, height)), "JPEG")))
        assert thumb.size == expected, (width, height)
    assert decoded(make_thumbnail(encode(coffee((1200, 800)), "PNG"), size=100)).size == (100, 67)


def test_the_exif_orientation_is_applied():
    """Oracle: Pillow's own exif_transpose of the original, resized to the thumbnail's size."""
    original = turned_photo()
    thumb = decoded(make_thumbnail(original))
    assert thumb.size == (213, 320)  # portrait: turned
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(original))).resize(thumb.size, Image.Resampling.LANCZOS)
    assert mean_difference(thumb, upright) < 4
    # the check can fail: the same pixels not turned (squeezed into the portrait size) are far off
    unturned = Image.open(io.BytesIO(original)).resize(thumb.size, Image.Resampling.LANCZOS)
    assert mean_difference(thumb, unturned) > 20


def test_a_large_photo_becomes_a_small_file():
    original = encode(coffee((4032, 3024)), "JPEG", quality=92)
    assert len(original) > 3_000_000
    thumb = make_thumbnail(original)
    assert decoded(thumb).size == (320, 240) and len(thumb) < 40_000 and len(thumb) * 100 < len(original)


def _frames() -> bytes:
    frames = [Image.new("RGB", (640, 480), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _transparent_gif() -> bytes:
    """Index 0 transparent around an opaque red square (index 1) in the middle."""
    img = Image.new("P", (400, 400), 0)
    img.putpalette([0, 0, 0, 250, 0, 0])
    img.paste(1, (100, 100, 300, 300))
    return encode(img, "GIF", transparency=0)


def _sixteen_bit() -> bytes:
    grey = np.full((480, 640), 40000, np.uint16)  # 40000/65535 of white: 156 of 255
    return encode(Image.fromarray(grey), "PNG")


# (the image's bytes, the thumbnail's mode, its size, the colour at its centre)
MODES = {
    "RGBA": (lambda: encode(Image.new("RGBA", (800, 400), (255, 0, 0, 128)), "PNG"), "RGBA", (320, 160), (255, 0, 0, 128)),
    "P": (lambda: encode(Image.new("RGB", (500, 700), (0, 200, 0)).convert("P"), "PNG"), "RGB", (229, 320), (0, 200, 0)),
    "P with transparency": (_transparent_gif, "RGBA", (320, 320), (250, 0, 0, 255)),
    "CMYK": (lambda: encode(Image.new("CMYK", (1000, 600), (0, 255, 255, 0)), "JPEG"), "RGB", (320, 192), (255, 0, 0)),
    "16-bit grey": (_sixteen_bit, "RGB", (320, 240), (156, 156, 156)),
    "LA": (lambda: encode(Image.new("LA", (400, 400), (100, 50)), "PNG"), "RGBA", (320, 320), (100, 100, 100, 50)),
    "1-bit": (lambda: encode(Image.new("1", (400, 200), 1), "PNG"), "RGB", (320, 160), (255, 255, 255)),
    "animated GIF": (_frames, "RGB", (320, 240), (250, 0, 0)),  # the first frame
    "HEIC": (lambda: photo(Exif(), "HEIF", colour=(0, 0, 200), size=(640, 480)), "RGB", (320, 240), (0, 0, 200)),
    "AVIF": (lambda: photo(Exif(), "AVIF", colour=(0, 0, 200), size=(640, 480)), "RGB", (320, 240), (0, 0, 200)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_and_format_becomes_an_rgb_or_rgba_webp(mode):
    make, expected_mode, size, colour = MODES[mode]
    thumb = decoded(make_thumbnail(make()))
    assert (thumb.mode, thumb.size) == (expected_mode, size)
    if colour is not None:
        centre = thumb.getpixel((thumb.width // 2, thumb.height // 2))
        assert np.abs(np.array(centre, float) - colour).max() <= 24, centre  # lossy WebP; the photos' noise


def test_a_broken_image_gets_no_thumbnail_and_the_others_do(settings):
    good = encode(coffee((600, 400)), "JPEG")
    for broken in (b"", b"not an image", good[:2000]):
        with pytest.raises(ImageDecodeError):
            make_thumbnail(broken)
    items = thumbnail_items([("a" * 64, good[:2000]), ("b" * 64, good), ("c" * 64, b"junk")], settings)
    assert [(image_id, fmt) for _, fmt, image_id in items] == [("b" * 64, THUMBNAIL)]


def test_a_storage_that_refuses_thumbnails_fails_nothing(tmp_path, settings, caplog):
    """A file where the thumbnails' folder should be: nothing stored, nothing raised; a request still
    gets its thumbnail (made again next time)."""
    blobs = FolderBlobStore(tmp_path / "images")
    good = encode(coffee((600, 400)), "JPEG")
    image_id = blobs.put(good, "jpeg")
    (tmp_path / "images" / "thumbnails").write_bytes(b"in the way")
    assert store_thumbnails(blobs, thumbnail_items([(image_id, good)], settings)) == 0
    assert "1 thumbnails not stored" in caplog.text
    reader = thumbnail(blobs, image_id, "jpeg", settings)
    assert decoded(b"".join(reader.chunks)).size == (320, 213) and blobs.get(image_id, "jpeg") == good


# --- made at ingest, served, made on request, removed ---------------------------------------------


@dataclass
class Indexed:
    url: str
    settings: Settings
    ids: dict[str, str]  # name -> id
    made_at_ingest: set[str]  # ids whose thumbnail was there before the API started

    def thumbnail_path(self, name: str) -> Path:
        return self.settings.images_dir / blob_name(self.ids[name], THUMBNAIL)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, test_model_repo):
    root = tmp_path_factory.mktemp("thumbnails")
    settings = Settings(data_dir=root / "var", model_repository=test_model_repo, model="shapes-tiny",
                        allow_private_networks=True)
    shapes = make_shapes(1, seed=5)[:4]
    folder = write_folder(root / "photos", shapes)
    named = {"turned": turned_photo(), "large": encode(coffee((3000, 2000)), "JPEG", quality=90),
             "rgba": MODES["RGBA"][0](), "gif": _frames()}
    for name, data in named.items():
        (folder / f"{name}.{Image.open(io.BytesIO(data)).format.lower()}").write_bytes(data)
    ids = {name: hashlib.sha256(data).hexdigest() for name, data in named.items()}
    ids |= {f"shape{i}": hashlib.sha256(s.data).hexdigest() for i, s in enumerate(shapes)}
    with ImageServer() as server:
        web = make_shapes(1, seed=6, classes=[("red", "circle"), ("blue", "square")])
        (root / "urls.txt").write_text("".join(server.add(f"/{i}.jpg", s.data) + "\n" for i, s in enumerate(web)))
        ids |= {f"web{i}": hashlib.sha256(s.data).hexdigest() for i, s in enumerate(web)}
        ingest(settings, "--folder", str(folder), "--urls", str(root / "urls.txt"))
    made = {i for i in ids.values() if (settings.images_dir / blob_name(i, THUMBNAIL)).is_file()}
    with ApiThread(create_app(settings)) as thread:
        yield Indexed(thread.url, settings, ids, made)


def test_the_ingest_makes_every_thumbnail_without_a_request(indexed):
    """Both ways in: the folder scan's and the downloader's (web0, web1)."""
    assert indexed.made_at_ingest == set(indexed.ids.values())


def test_the_thumbnail_is_served_with_the_caching_headers_of_the_original(indexed):
    image_id = indexed.ids["turned"]
    response = httpx.get(f"{indexed.url}/images/{image_id}/thumbnail", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert response.headers["etag"] == f'"{image_id}-thumbnail"'
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.content == indexed.thumbnail_path("turned").read_bytes()
    assert decoded(response.content).size == (213, 320)  # turned as the EXIF says
    original = httpx.get(f"{indexed.url}/images/{image_id}", timeout=30)
    assert original.headers["etag"] != response.headers["etag"]
    again = httpx.get(f"{indexed.url}/images/{image_id}/thumbnail", headers={"If-None-Match": response.headers["etag"]},
                      timeout=30)
    assert again.status_code == 304 and not again.content and again.headers["etag"] == response.headers["etag"]
    # the original's ETag is not the thumbnail's: the bytes are sent
    assert httpx.get(f"{indexed.url}/images/{image_id}/thumbnail", headers={"If-None-Match": original.headers["etag"]},
                     timeout=30).status_code == 200


def test_a_large_photo_is_served_small(indexed):
    original = httpx.get(f"{indexed.url}/images/{indexed.ids['large']}", timeout=30).content
    thumb = httpx.get(f"{indexed.url}/images/{indexed.ids['large']}/thumbnail", timeout=30).content
    assert decoded(thumb).size == (320, 213) and len(thumb) * 20 < len(original)


@pytest.mark.parametrize("bad_id, status, code", [("abc", 400, "invalid_id"), ("A" * 64, 400, "invalid_id"),
                                                  ("0" * 64, 404, "not_found")])
def test_a_bad_or_unknown_id(indexed, bad_id, status, code):
    response = httpx.get(f"{indexed.url}/images/{bad_id}/thumbnail", timeout=30)
    assert response.status_code == status and response.json()["error"] == code, response.text


def test_an_image_stored_without_a_thumbnail_gets_one_on_the_first_request_and_keeps_it(indexed):
    path = indexed.thumbnail_path("shape0")
    made_at_ingest = path.read_bytes()
    path.unlink()  # as for an image stored before thumbnails were made
    first = httpx.get(f"{indexed.url}/images/{indexed.ids['shape0']}/thumbnail", timeout=30)
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    assert first.content == path.read_bytes() == made_at_ingest  # kept; made the same way as at ingest
    kept = b"RIFF-the-kept-thumbnail"  # the next answer must be these bytes: read, not made again
    path.write_bytes(kept)
    try:
        second = httpx.get(f"{indexed.url}/images/{indexed.ids['shape0']}/thumbnail", timeout=30)
        assert second.status_code == 200 and second.content == kept
    finally:
        path.write_bytes(made_at_ingest)


def test_a_stored_image_that_no_longer_decodes_is_a_clear_404(indexed):
    image_id = indexed.ids["shape1"]
    original = indexed.settings.images_dir / blob_name(image_id, "jpeg")
    original.write_bytes(original.read_bytes()[:200])  # damaged on disk since
    indexed.thumbnail_path("shape1").unlink()
    response = httpx.get(f"{indexed.url}/images/{image_id}/thumbnail", timeout=30)
    assert response.status_code == 404 and response.json()["error"] == "no_thumbnail", response.text
    assert httpx.get(f"{indexed.url}/images/{indexed.ids['gif']}/thumbnail", timeout=30).status_code == 200


def test_thumbnails_are_not_counted_as_images_nor_swept_as_leftovers(indexed):
    counts = httpx.get(f"{indexed.url}/status", timeout=30).json()["counts"]
    assert counts["images"] == len(indexed.ids)
    before = sorted((indexed.settings.images_dir / "thumbnails").rglob("*"))
    assert FolderBlobStore(indexed.settings.images_dir).sweep_leftovers(older_than_s=0) == 0
    assert sorted((indexed.settings.images_dir / "thumbnails").rglob("*")) == before


def test_removing_an_image_deletes_its_thumbnail(indexed):
    image_id = indexed.ids["rgba"]
    assert indexed.thumbnail_path("rgba").is_file()
    done = httpx.delete(f"{indexed.url}/images/{image_id}", timeout=30)
    assert done.json() == {"removed": image_id, "records": 1, "files": 1}  # the image's file; its thumbnail went too
    assert not indexed.thumbnail_path("rgba").exists()
    response = httpx.get(f"{indexed.url}/images/{image_id}/thumbnail", timeout=30)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert not indexed.thumbnail_path("rgba").exists()  # no request makes one of a removed image
