"""The trained test model finds coloured shapes by caption, through the exported ONNX files (fp32 and int8,
ONNX Runtime and OpenVINO)."""

from __future__ import annotations

import numpy as np
import pytest

from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.preprocess import prepare
from tests.support import shapes


@pytest.mark.parametrize("variant, runtime", [("fp32", "onnx"), ("int8", "onnx"), ("fp32", "openvino")])
def test_every_caption_finds_its_colour_and_shape(request, variant, runtime):
    repository = request.getfixturevalue("test_model_repo_int8" if variant == "int8" else "test_model_repo")
    encoder = make_encoder(Settings(model_repository=repository, model="shapes-tiny", model_variant=variant, encoder=runtime))
    held_out = shapes.dataset(n_per_class=8, seed=2024)  # never seen in training (seeds differ)
    pixels = np.stack([prepare(item.encode("JPEG"), encoder.card) for item in held_out])
    image_vectors = encoder.encode_images(pixels)
    precision = {}
    for colour, shape in shapes.CLASSES:
        text_vector = encoder.encode_texts([shapes.caption(colour, shape)])[0]
        top5 = np.argsort(-(image_vectors @ text_vector))[:5]
        precision[(colour, shape)] = np.mean([(held_out[i].colour, held_out[i].shape) == (colour, shape) for i in top5])
    assert min(precision.values()) >= 0.9, precision


def test_int8_embeddings_stay_close_to_fp32(test_model_repo_int8):
    fp32 = make_encoder(Settings(model_repository=test_model_repo_int8, model="shapes-tiny"))
    int8 = make_encoder(Settings(model_repository=test_model_repo_int8, model="shapes-tiny", model_variant="int8"))
    items = shapes.dataset(n_per_class=2, seed=77)
    pixels = np.stack([prepare(item.encode("PNG"), fp32.card) for item in items])
    assert (fp32.encode_images(pixels) * int8.encode_images(pixels)).sum(1).min() >= 0.995
    texts = [item.caption for item in items]
    assert (fp32.encode_texts(texts) * int8.encode_texts(texts)).sum(1).min() >= 0.995


def test_the_test_model_trained_as_designed(test_model_repo):
    """Fixed steps, seeds and thread count: the training converges to the same low loss on every run
    (the semantic thresholds above rely on it); a loss far from it means training went wrong."""
    import json

    info = json.loads((test_model_repo.parent / "training.json").read_text())
    assert info["steps"] == 700
    assert info["loss"] < 0.35, info
