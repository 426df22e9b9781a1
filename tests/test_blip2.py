"""BLIP-2 as an embedding model: a tiny random-weight Blip2ForImageTextRetrieval (tests/support/tiny_blip2.py)
exported through `imagesearch export --family blip2`, checked against transformers itself: its
tokenizer's ids, its ITC scores, and through the real API in both stores, its ranking."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import uuid

import httpx
import numpy as np
import onnx
import pytest
from PIL import Image

from imagesearch.api.app import create_app
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.model_card import load_card
from imagesearch.preprocess import prepare
from imagesearch.tokenizer import Tokenizer
from tests.support.cli import clean_env
from tests.support.search_api import ROOT, ApiThread, ingest, make_shapes, write_folder
from tests.test_tokenizer import corpus

SLUG = "blip2-tiny"
TEXTS = ["a red circle", "a photo of a blue square", "green triangle on the beach", "a yellow star at night",
         "a dog", "naïve café ☕ — 東京"]


def hf_folder(blip2_repo):
    return blip2_repo.parent / "blip2-tiny-hf"


def transformers_scores(folder, images: list[bytes], texts: list[str]) -> np.ndarray:
    """transformers' own ITC scores [images, texts]: its image processor, tokenizer and model."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, Blip2ForImageTextRetrieval

    model = Blip2ForImageTextRetrieval.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(
        images=[Image.open(io.BytesIO(data)) for data in images], return_tensors="pt").pixel_values
    tokens = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                    use_image_text_matching_head=False)
    return out.logits_per_image.numpy()


def test_the_export_writes_the_multi_vector_contract(blip2_repo):
    card = load_card(blip2_repo, SLUG)
    assert (card.family, card.vectors_per_image, card.dim, card.image_size) == ("blip2", 4, 16, 32)
    assert (card.resize_mode, card.interpolation, card.tokenizer.clean) == ("squash", "bicubic", "none")
    assert card.exported_with.startswith("transformers ") and card.variants == ["fp32", "int8"]
    assert min(card.parity[f"{t}_fp32"] for t in ("visual", "textual")) >= 0.9999
    assert min(card.parity[f"{t}_int8"] for t in ("visual", "textual")) >= 0.995
    visual = onnx.load(str(card.onnx_path(blip2_repo, "visual")))
    assert visual.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    out_dims = [d.dim_value or d.dim_param for d in visual.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[1:] == [4, 16] and isinstance(out_dims[0], str)  # [batch, queries, dim]
    config = (blip2_repo / f"{SLUG}_visual" / "config.pbtxt").read_text()
    assert "dims: 4\n  dims: 16" in config  # Triton's output: one embedding per query


def test_the_tokenizer_gives_transformers_ids(blip2_repo):
    from transformers import AutoTokenizer

    card = load_card(blip2_repo, SLUG)
    ours = Tokenizer.from_card(card, blip2_repo)
    theirs = AutoTokenizer.from_pretrained(hf_folder(blip2_repo))
    texts = corpus()
    expected = theirs(texts, padding="max_length", truncation=True, max_length=card.context_length)["input_ids"]
    got = ours(texts)
    mismatched = [t for t, a, b in zip(texts, got.tolist(), expected, strict=True) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]!r}"
    assert (got[:, 0] == theirs.cls_token_id).all()  # every text, even an empty one, has its [CLS]
    assert len({tuple(row) for row in got.tolist()}) > len(texts) // 2  # not all [UNK]


# fp32: the pixels differ by Pillow's rounding of the resize (uint8 into the graph, float in transformers)
@pytest.mark.parametrize("variant, tolerance", [("fp32", 5e-4), ("int8", 0.03)])
def test_the_exported_encoders_score_as_transformers(blip2_repo, variant, tolerance):
    encoder = make_encoder(Settings(model_repository=blip2_repo, model=SLUG, model_variant=variant))
    images = [shape.data for shape in make_shapes(1, seed=3)]
    image_vectors = encoder.encode_images(np.stack([prepare(data, encoder.card) for data in images]))
    assert image_vectors.shape == (len(images), 4, 16)
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=-1), 1, atol=1e-5)
    text_vectors = encoder.encode_texts(TEXTS)
    ours = np.einsum("iqd,td->itq", image_vectors, text_vectors).max(-1)  # each image's best query
    expected = transformers_scores(hf_folder(blip2_repo), images, TEXTS)
    assert expected.std() > 0.05  # images and texts are told apart: a ranking test means something
    np.testing.assert_allclose(ours, expected, atol=tolerance)


@pytest.mark.parametrize("store", ["local", "elasticsearch"])
def test_search_through_the_api_ranks_as_transformers(request, tmp_path, blip2_repo, store):
    extra = {}
    if store == "elasticsearch":
        node = request.getfixturevalue("es_node")
        # float HNSW: on a few vectors its ranking is the exact one
        extra = {"es_url": node.url, "es_index_type": "hnsw", "es_index_prefix": f"b{uuid.uuid4().hex[:10]}"}
    settings = Settings(data_dir=tmp_path / "var", model_repository=blip2_repo, model=SLUG, store=store, **extra)
    shapes = make_shapes(1, seed=4)
    ingest(settings, "--folder", str(write_folder(tmp_path / "images", shapes)))
    ids = [hashlib.sha256(shape.data).hexdigest() for shape in shapes]
    expected = transformers_scores(hf_folder(blip2_repo), [shape.data for shape in shapes], TEXTS)
    with ApiThread(create_app(settings)) as api:
        status = httpx.get(f"{api.url}/status", timeout=30).json()
        assert status["counts"]["embedded"] == len(shapes), status
        for t, text in enumerate(TEXTS):
            response = httpx.get(f"{api.url}/search", params={"q": text, "k": len(shapes)}, timeout=30)
            assert response.status_code == 200, response.text
            body = response.json()
            order = np.argsort(-expected[:, t], kind="stable")
            gaps = np.diff(-expected[order, t])
            assert gaps.min() > 1e-3, f"near-ties in transformers' scores for {text!r}: the order is not defined"
            assert [r["id"] for r in body["results"]] == [ids[i] for i in order], text
            np.testing.assert_allclose([r["score"] for r in body["results"]], expected[order, t], atol=5e-4)
            assert body["model"] == SLUG
        # min_score applies to an image's best query, as the ranking does
        threshold = float(np.sort(expected[:, 0])[-3])
        found = httpx.get(f"{api.url}/search", params={"q": TEXTS[0], "k": len(shapes), "min_score": threshold - 1e-5},
                          timeout=30).json()["results"]
        assert [r["id"] for r in found] == [ids[i] for i in np.argsort(-expected[:, 0])[:3]]
        # by example: the image's query vectors, averaged, against every image's best query
        example = httpx.post(f"{api.url}/search", json={"image_id": ids[0], "k": 3}, timeout=30)
        assert example.status_code == 200, example.text
        assert len(example.json()["results"]) == 3


def test_the_cli_exports_blip2_and_refuses_random_weights_without_a_tokenizer(tmp_path, blip2_repo):
    command = [sys.executable, "-m", "imagesearch.cli", "export", "--family", "blip2", "--repository", str(tmp_path)]
    done = subprocess.run([*command, "--pretrained", str(hf_folder(blip2_repo)), "--slug", "cli-blip2"],
                          env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exported cli-blip2 (blip2, 4 x 16-d vectors per image, 32px)" in done.stdout
    assert json.loads((tmp_path / "cli-blip2.json").read_text())["family"] == "blip2"
    refused = subprocess.run([*command, "--pretrained", "none"], env=clean_env(), cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2 and "needs its tokenizer and configuration: pass --model-config" in refused.stdout


def test_two_models_side_by_side_in_one_store_and_one_api(tmp_path, test_model_repo, blip2_repo):
    """IMAGESEARCH_MODELS: each image is embedded with each model, a model added later embeds only
    what it lacks, and the API serves both (default first) with their counts and health."""
    repository = tmp_path / "models"  # both exports in one repository, as `imagesearch export` twice makes it
    repository.mkdir()
    for source in (test_model_repo, blip2_repo):
        for entry in source.iterdir():
            (repository / entry.name).symlink_to(entry)
    clip_only = Settings(data_dir=tmp_path / "var", model_repository=repository, model="shapes-tiny")
    shapes = make_shapes(1, seed=6)
    ids = [hashlib.sha256(shape.data).hexdigest() for shape in shapes]
    ingest(clip_only, "--folder", str(write_folder(tmp_path / "images", shapes)))

    both = clip_only.model_copy(update={"models": f"shapes-tiny,{SLUG}"})
    env = {**clean_env(**{"IMAGESEARCH_DATA_DIR": str(both.data_dir), "IMAGESEARCH_MODEL_REPOSITORY": str(repository),
                          "IMAGESEARCH_MODELS": both.models})}
    added = subprocess.run([sys.executable, "-m", "imagesearch.cli", "ingest", "embed"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "embed shapes-tiny: 0 embedded" in added.stdout  # it had them all already
    assert f"embed {SLUG}: {len(shapes)} embedded" in added.stdout
    expected = transformers_scores(hf_folder(blip2_repo), [shape.data for shape in shapes], TEXTS[:1])[:, 0]

    with ApiThread(create_app(both)) as api:
        status = httpx.get(f"{api.url}/status", timeout=30).json()
        assert [(m["slug"], m["family"], m["vectors_per_image"], m["counts"]["embedded"]) for m in status["models"]] == [
            ("shapes-tiny", "open_clip", 1, len(shapes)), (SLUG, "blip2", 4, len(shapes))]
        health = httpx.get(f"{api.url}/healthz", timeout=30).json()
        assert health["ok"] and set(health["models"]) == {"shapes-tiny", SLUG} and health["model"] == "shapes-tiny"

        default = httpx.get(f"{api.url}/search", params={"q": "a red circle", "k": 3}, timeout=30).json()
        assert default["model"] == "shapes-tiny"
        assert shapes[ids.index(default["results"][0]["id"])].caption == "a red circle"  # the trained CLIP's answer
        for response in (
            httpx.get(f"{api.url}/search", params={"q": TEXTS[0], "k": len(shapes), "model": SLUG}, timeout=30),
            httpx.post(f"{api.url}/search", json={"text": TEXTS[0], "k": len(shapes), "model": SLUG}, timeout=30),
        ):
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == SLUG
            assert [r["id"] for r in body["results"]] == [ids[i] for i in np.argsort(-expected)]
        upload = httpx.post(f"{api.url}/search/image", files={"file": ("x.jpg", shapes[0].data, "image/jpeg")},
                            data={"k": 2, "model": SLUG}, timeout=30)
        assert upload.status_code == 200 and upload.json()["model"] == SLUG, upload.text
        unknown = httpx.get(f"{api.url}/search", params={"q": "x", "model": "no-such-model"}, timeout=30)
        assert unknown.status_code == 400
        assert f"this API serves: shapes-tiny, {SLUG}" in unknown.json()["detail"]
    searched = subprocess.run([sys.executable, "-m", "imagesearch.cli", "search", TEXTS[0], "--model", SLUG, "--json",
                               "-k", str(len(shapes))], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert searched.returncode == 0, searched.stderr
    body = json.loads(searched.stdout)
    assert body["model"] == SLUG and [r["id"] for r in body["results"]] == [ids[i] for i in np.argsort(-expected)]
    status = subprocess.run([sys.executable, "-m", "imagesearch.cli", "status"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert status.returncode == 0, status.stderr
    assert f"model:   {SLUG} (blip2, " in status.stdout and "4 x 16-d vectors per image" in status.stdout
    assert status.stdout.count(f"embedded: {len(shapes)}") == 2


def test_a_model_too_big_for_one_protobuf_keeps_its_weights_beside_the_graph(tmp_path, blip2_repo, monkeypatch):
    """BLIP-2 ViT-g has 1.2 billion weights (4.4 GiB in fp32), over protobuf's 2 GiB: its graphs keep
    the weights in ``model.onnx.data``. The same path, forced on the tiny model: every variant is
    written so, passes its gate, and loads in ONNX Runtime with the embeddings of the one-file export."""
    from imagesearch.export import graph
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions

    monkeypatch.setattr(graph, "EXTERNAL_DATA_BYTES", 0)
    card = export_model(
        ExportOptions(family="blip2", pretrained=str(hf_folder(blip2_repo)), slug=SLUG, fp16=True, int8=True),
        tmp_path, triton_kind="KIND_CPU")
    for variant in ("fp32", "fp16", "int8"):
        for tower in ("visual", "textual"):
            graph = onnx.load(str(card.onnx_path(tmp_path, tower, variant)), load_external_data=False)
            stored = {e.value for t in graph.graph.initializer for e in t.external_data if e.key == "location"}
            assert stored == {f"{card.onnx_path(tmp_path, tower, variant).name}.data"}, (tower, variant, stored)
    folder = card.onnx_path(tmp_path, "visual").parent
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o644"}  # other users (Triton) read them
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.fp16.onnx", "model.fp16.onnx.data", "model.int8.onnx", "model.int8.onnx.data", "model.onnx", "model.onnx.data"]
    split = make_encoder(Settings(model_repository=tmp_path, model=SLUG))
    whole = make_encoder(Settings(model_repository=blip2_repo, model=SLUG))
    pixels = np.stack([prepare(shape.data, split.card) for shape in make_shapes(1, seed=9)[:4]])
    np.testing.assert_allclose(split.encode_images(pixels), whole.encode_images(pixels), atol=1e-6)
    np.testing.assert_allclose(split.encode_texts(TEXTS), whole.encode_texts(TEXTS), atol=1e-6)
    assert split.health()["reference_check"]["ok"] is True
