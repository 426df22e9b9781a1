"""The exported CLIP against open_clip itself, as an oracle outside the export code: the trained test
model's checkpoint loaded by open_clip (its own config, preprocess and tokenizer) must give the
vectors that the ONNX encoders give for the same images (through ``imagesearch.preprocess.prepare``)
and the same texts (through our tokenizer)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from imagesearch.config import Settings
from imagesearch.encoders import make_encoder, row_cosines
from imagesearch.preprocess import prepare
from tests.support import shapes

COSINE_MIN = 0.9999
TEXTS = [
    "a red circle", "A Blue SQUARE", "a yellow triangle.", "green", "", "   spaced    out   words  ",
    "a photo of a red circle on a grey background, slightly blurred, taken at noon with a phone",  # past 16 tokens
    "café crème, naïve résumé", "emoji 🙂 and symbols #1 & <b>bold</b>", "it's a dog's life", "12345 67.8",
]


@pytest.fixture(scope="module")
def towers(test_model_repo):
    """(open_clip model, its preprocess, its tokenizer, our ONNX encoder) for the test model."""
    import open_clip

    trained = test_model_repo.parent  # checkpoint.pt and the open_clip config folder (tests/support/test_model.py)
    open_clip.add_model_config(trained / "config")
    model, _, preprocess = open_clip.create_model_and_transforms("shapes-tiny", pretrained=str(trained / "checkpoint.pt"))
    model.eval()
    encoder = make_encoder(Settings(model_repository=test_model_repo, model="shapes-tiny"))
    return model, preprocess, open_clip.get_tokenizer("shapes-tiny"), encoder


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_vectors_match_open_clip(towers, fmt):
    """JPEG without ``draft``: by default a big JPEG is decoded at a reduced scale first (DCT scaling,
    for decoding speed), whose pixels are close to open_clip's but not the same."""
    import torch

    model, preprocess, _, encoder = towers
    rng = random.Random(12)
    sizes = [(96, 96), (120, 80), (80, 120), (33, 47), (300, 200), (32, 32), (31, 64)]  # square, wide, tall, small, big
    pictures = [shapes.draw_shape(*rng.choice(shapes.CLASSES), rng, size) for size in sizes for _ in range(2)]
    files = [picture.encode(fmt) for picture in pictures]
    with torch.no_grad():
        reference = model.encode_image(torch.stack([preprocess(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]))
    ours = encoder.encode_images(np.stack([prepare(f, encoder.card, draft=False) for f in files]))
    cosines = row_cosines(ours, unit(reference.numpy()))
    assert cosines.min() >= COSINE_MIN, dict(zip([f"{w}x{h}" for w, h in sizes for _ in range(2)], cosines.round(6), strict=True))


def test_text_vectors_match_open_clip(towers):
    import torch

    model, _, tokenizer, encoder = towers
    with torch.no_grad():
        reference = model.encode_text(tokenizer(TEXTS))
    cosines = row_cosines(encoder.encode_texts(TEXTS), unit(reference.numpy()))
    assert cosines.min() >= COSINE_MIN, dict(zip(TEXTS, cosines.round(6), strict=True))
