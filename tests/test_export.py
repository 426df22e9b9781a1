"""Export: the parity gate on real open_clip architectures (random weights), variants, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from imagesearch.export.pipeline import export_model
from imagesearch.export.source import ExportError, ExportOptions
from imagesearch.export.sources.open_clip import load_model
from imagesearch.model_card import load_card

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "model, tokenizer",
    [("ViT-B-32", True), ("ViT-B-16", True), ("ViT-L-14", True),
     # SigLIP's Hugging Face tokenizer needs the hub: the towers' parity is checked with token ids.
     ("ViT-B-16-SigLIP", False)],
)
def test_parity_gate_passes_for_open_clip_architectures(tmp_path, request, model, tokenizer):
    if model == "ViT-B-32":  # exported once for every test that needs it (conftest.vit_b32_repo)
        repository = request.getfixturevalue("vit_b32_repo")
        card = load_card(repository)
    else:
        repository = tmp_path
        card = export_model(ExportOptions(model=model, pretrained="none", tokenizer=tokenizer), repository)
        assert load_card(repository, card.slug) == card
    assert card.parity["visual_fp32"] >= 0.9999
    assert card.parity["textual_fp32"] >= 0.9999
    for tower in ("visual", "textual"):
        assert card.onnx_path(repository, tower).is_file()
        assert (repository / f"{card.slug}_{tower}" / "config.pbtxt").is_file()
    saved = load_card(repository, card.slug)
    assert saved.dim == {"ViT-B-32": 512, "ViT-B-16": 512, "ViT-L-14": 768, "ViT-B-16-SigLIP": 768}[model]
    import open_clip  # the description carries what open_clip's own transform does for this model

    expected = open_clip.get_model_preprocess_cfg(open_clip.create_model(model, pretrained=None))
    assert (saved.resize_mode, saved.interpolation, saved.mean, saved.std) == (
        expected["resize_mode"], expected["interpolation"], tuple(expected["mean"]), tuple(expected["std"]))


def test_fp16_and_int8_variants_pass_their_gates(vit_b32_repo):
    card = load_card(vit_b32_repo)
    assert card.variants == ["fp32", "fp16", "int8"]
    assert min(card.parity["visual_fp16"], card.parity["textual_fp16"]) >= 0.999
    assert min(card.parity["visual_int8"], card.parity["textual_int8"]) >= 0.995
    assert (
        card.onnx_path(vit_b32_repo, "visual", "int8").stat().st_size < card.onnx_path(vit_b32_repo, "visual").stat().st_size / 3
    )


def test_graph_contract_uint8_in_normalized_float_out(test_model_repo):
    import onnx

    card = load_card(test_model_repo, "shapes-tiny")
    visual = onnx.load(str(card.onnx_path(test_model_repo, "visual")))
    (inp,), (out,) = visual.graph.input, visual.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [card.image_size, card.image_size, 3] and isinstance(dims[0], str)  # dynamic batch
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    textual = onnx.load(str(card.onnx_path(test_model_repo, "textual")))
    assert textual.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_parity_gate_rejects_a_broken_graph(vit_b32_repo):
    from imagesearch.export.parity import check_parity

    card = load_card(vit_b32_repo)
    images = np.zeros((2, 224, 224, 3), np.uint8)
    wrong_reference = np.random.default_rng(0).normal(size=(2, card.dim)).astype(np.float32)
    with pytest.raises(ExportError, match="parity check failed .* worst cosine"):
        check_parity(card.onnx_path(vit_b32_repo, "visual"), wrong_reference, images, 0.9999, "broken")


def test_unknown_model_lists_close_matches():
    with pytest.raises(ExportError, match="Did you mean: .*ViT-B-32"):
        load_model(ExportOptions(model="ViT-B-23", pretrained="none"))


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ExportError, match="known tags: .*laion2b_s34b_b79k"):
        load_model(ExportOptions(model="ViT-B-32", pretrained="no_such_tag"))


def test_offline_pretrained_weights_fail_fast_with_a_way_out(tmp_path):
    """No model hub here: the real download path must fail quickly and say how to pass a checkpoint."""
    env = {"HF_HUB_DOWNLOAD_TIMEOUT": "5", "HF_HUB_ETAG_TIMEOUT": "5", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "imagesearch.cli", "export", "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k",
         "--repository", str(tmp_path / "repo")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "could not get the weights for ViT-B-32 / laion2b_s34b_b79k" in result.stdout
    assert "--pretrained /path/to/checkpoint.bin" in result.stdout
    assert not (tmp_path / "repo" / "vit-b-32-laion2b-s34b-b79k.json").exists()


def test_missing_local_checkpoint_is_a_clear_error():
    with pytest.raises(ExportError, match="checkpoint file /nowhere/model.bin does not exist"):
        load_model(ExportOptions(model="ViT-B-32", pretrained="/nowhere/model.bin"))


def test_cli_export_if_missing_is_a_no_op(test_model_repo, capsys):
    from imagesearch.cli import main

    assert (
        main(["export", "--model", "shapes-tiny", "--slug", "shapes-tiny", "--repository", str(test_model_repo), "--if-missing"])
        == 0
    )
    assert "already in" in capsys.readouterr().out
    assert json.loads((test_model_repo / "shapes-tiny.json").read_text())["slug"] == "shapes-tiny"
