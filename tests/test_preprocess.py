"""Preprocessing: formats, EXIF, modes, exact parity with open_clip's transform, draft mode, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagesearch.model_card import load_card
from imagesearch.preprocess import ImageDecodeError, prepare, probe
from tests.support.shapes import draw_shape


def photo(width: int = 1024, height: int = 768, seed: int = 0) -> Image.Image:
    """A smooth, photo-like picture (gradients + shapes), so resizing artefacts are realistic."""
    import random

    img = draw_shape("red", "circle", random.Random(seed), (width, height)).image
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def vit_card(vit_b32_repo):
    """ViT-B-32's description (224px, bicubic, shortest-side resize) and open_clip's own transform."""
    import open_clip

    _, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return load_card(vit_b32_repo), vit_b32_repo, transform


def open_clip_pixels(transform, data: bytes, card) -> np.ndarray:
    """open_clip's preprocess output, un-normalized back to uint8 pixels."""
    tensor = transform(Image.open(io.BytesIO(data))).numpy()
    mean, std = np.array(card.mean)[:, None, None], np.array(card.std)[:, None, None]
    return np.rint((tensor * std + mean) * 255).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)


@pytest.mark.parametrize("size", [(1024, 768), (640, 960), (300, 300), (225, 1000), (100, 80)])
def test_exact_path_gives_open_clips_pixels(vit_card, size):
    card, _, transform = vit_card
    data = encode(photo(*size), "PNG")
    ours = prepare(data, card, draft=False)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - open_clip_pixels(transform, data, card).astype(int))
    assert diff.max() <= 1  # only float round-trip rounding


def test_embeddings_match_open_clip_preprocess_including_draft_mode(vit_card):
    import torch

    card, repo, transform = vit_card
    from imagesearch.config import Settings
    from imagesearch.encoders import make_encoder

    encoder = make_encoder(Settings(model_repository=repo, model=card.slug))
    jpegs = [encode(photo(1024, 768, seed=s), "JPEG", quality=90) for s in range(4)]
    reference = np.stack([open_clip_pixels(transform, d, card) for d in jpegs])
    for draft in (False, True):
        ours = np.stack([prepare(d, card, draft=draft) for d in jpegs])
        a, b = encoder.encode_images(ours), encoder.encode_images(reference)
        assert (a * b).sum(1).min() >= 0.999, (draft, (a * b).sum(1))
    del torch


def test_test_model_embeddings_with_draft_stay_within_bound(test_model_repo):
    from imagesearch.config import Settings
    from imagesearch.encoders import make_encoder

    encoder = make_encoder(Settings(model_repository=test_model_repo, model="shapes-tiny"))
    import random

    jpegs = [encode(draw_shape(c, "square", random.Random(i), (800, 600)).image, "JPEG", quality=90)
             for i, c in enumerate(["red", "blue", "green", "yellow"])]
    exact = encoder.encode_images(np.stack([prepare(d, encoder.card, draft=False) for d in jpegs]))
    drafted = encoder.encode_images(np.stack([prepare(d, encoder.card, draft=True) for d in jpegs]))
    assert (exact * drafted).sum(1).min() >= 0.999


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_decodes(vit_card, fmt):
    card = vit_card[0]
    data = encode(photo(320, 240), fmt)
    assert prepare(data, card).shape == (224, 224, 3)
    assert probe(data).format == fmt.lower()


def test_animated_gif_uses_first_frame(vit_card):
    card = vit_card[0]
    frames = [Image.new("RGB", (256, 256), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    pixels = prepare(buf.getvalue(), card)
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


def with_alpha(img: Image.Image, low: int = 0) -> Image.Image:
    """``img`` with an alpha channel going from ``low`` to 255 across it."""
    out = img.convert("RGBA" if img.mode == "RGB" else "LA")
    out.putalpha(Image.linear_gradient("L").resize(img.size).point(lambda v: low + v * (255 - low) // 255))
    return out


def with_black(img: Image.Image) -> Image.Image:
    """``img`` as CMYK with the grey part in K (Pillow's own RGB->CMYK leaves K at 0)."""
    cmy = 255 - np.asarray(img, np.int16)
    k = cmy.min(axis=2, keepdims=True)
    return Image.fromarray(np.concatenate([cmy - k, k], axis=2).astype(np.uint8), "CMYK")


def mode_image(mode: str) -> bytes:
    """A photo-like picture in ``mode``, as file bytes."""
    rgb = photo(300, 200)
    img = {"RGBA": lambda: with_alpha(rgb), "LA": lambda: with_alpha(rgb.convert("L")), "CMYK": lambda: with_black(rgb),
           "I;16": lambda: rgb.convert("L").convert("I;16")}.get(mode, lambda: rgb.convert(mode))()
    assert img.mode == mode
    return encode(img, "JPEG" if mode == "CMYK" else "PNG")


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "LA", "I;16"])
def test_modes_convert_to_rgb_exactly_like_open_clip(vit_card, mode):
    """Each mode gives exactly the pixels of open_clip's own PIL stages (Resize, CenterCrop, then a
    plain convert('RGB')) on the decoded image: the order matters for RGBA/LA (resized premultiplied),
    P (resized NEAREST) and CMYK (not linear), and no rounding is allowed before the float stages."""
    card, _, transform = vit_card
    pil_stages = transform.transforms[:3]
    assert [type(t).__name__ for t in pil_stages] == ["Resize", "CenterCrop", "MaybeConvertMode"]
    data = mode_image(mode)
    reference = Image.open(io.BytesIO(data))
    for stage in pil_stages:
        reference = stage(reference)
    assert reference.mode == "RGB"
    np.testing.assert_array_equal(prepare(data, card, draft=False), np.asarray(reference))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_not_composited(vit_card, mode):
    """One colour under alpha from 50% to 100%: every pixel keeps that colour whatever its alpha (a
    composite on white, black or the fill colour would shade the more transparent side)."""
    colour = (200, 30, 60) if mode == "RGBA" else 90
    data = encode(with_alpha(Image.new("RGB" if mode == "RGBA" else "L", (300, 200), colour), low=128), "PNG")
    pixels = prepare(data, vit_card[0]).reshape(-1, 3).astype(int)
    assert np.abs(pixels - colour).max() <= 3  # Pillow resizes in 8-bit premultiplied alpha: rounding only


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_grey_modes_give_the_grey_value_in_every_channel(vit_card, mode):
    """A grey picture (L, or I;16 holding 0..255) is its grey value in R, G and B alike."""
    card = vit_card[0]
    grey = photo(300, 200).convert("L")
    ours = prepare(mode_image(mode), card)
    np.testing.assert_array_equal(ours, prepare(encode(grey.convert("RGB"), "PNG"), card))
    assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 1] == ours[..., 2]).all()


def test_exif_orientation_is_applied(vit_card):
    card = vit_card[0]
    img = Image.new("RGB", (400, 200), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 200, 200))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed: white ends up on top
    pixels = prepare(encode(img, "JPEG", exif=exif), card, draft=False)
    assert pixels[:50].mean() > 200 and pixels[-50:].mean() < 50


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"<html><body>not an image</body></html>", "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not_an_image"),
    ],
)
def test_bad_input_raises_one_typed_error(vit_card, data, reason):
    with pytest.raises(ImageDecodeError) as info:
        prepare(data, vit_card[0])
    assert info.value.reason == reason


def test_truncated_jpeg_is_a_typed_error(vit_card):
    data = encode(photo(640, 480), "JPEG")
    with pytest.raises(ImageDecodeError) as info:
        prepare(data[: len(data) // 2], vit_card[0], draft=False)
    assert info.value.reason == "truncated"


def test_decompression_bomb_is_refused_before_decoding(vit_card):
    data = encode(Image.new("L", (12000, 12000)), "PNG")  # 144 Mpx, compresses to a few hundred KB
    with pytest.raises(ImageDecodeError) as info:
        prepare(data, vit_card[0], max_pixels=50_000_000)
    assert info.value.reason == "too_many_pixels" and "12000x12000" in str(info.value)


@pytest.mark.parametrize("progressive", [False, True])
def test_probe_refuses_a_damaged_jpeg_exactly_when_a_full_decode_does(progressive):
    """probe() decodes JPEGs at 1/8 scale; every cut and every flipped byte that breaks a full decode
    breaks it too, and the size it reports is the full one."""
    buffer = io.BytesIO()
    photo(640, 480).save(buffer, format="JPEG", quality=90, progressive=progressive)
    data = buffer.getvalue()
    assert probe(data).width == 640 and probe(data).height == 480

    def full_decode_fails(damaged: bytes) -> bool:
        try:
            Image.open(io.BytesIO(damaged)).load()
        except Exception:
            return True
        return False

    rng = np.random.default_rng(0)
    cuts = [data[:n] for n in (len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 2)]
    flips = []
    for position in rng.integers(len(data) // 4, len(data) - 2, 12):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        flips.append(bytes(damaged))
    refused = 0
    for damaged in cuts + flips:
        try:
            probe(damaged)
            probe_failed = False
        except ImageDecodeError:
            probe_failed = True
        assert probe_failed == full_decode_fails(damaged)
        refused += probe_failed
    assert refused >= len(cuts) - 1  # the checks above compare like with like: most damage is caught
