"""open_clip models with a Hugging Face text tower (the multilingual CLIPs: XLM-RoBERTa, NLLB's encoder):
the torch-free tokenizer gives open_clip's ids in many scripts, and the export (``--text-model``) writes
the usual contract, passes its gates and fails fast offline. The searches are in test_multilingual_search.py."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagesearch.export.pipeline import export_model
from imagesearch.export.source import ExportError, ExportOptions
from imagesearch.model_card import load_card
from imagesearch.tokenizer import Tokenizer
from tests.support import multilingual, shapes

# Edge cases of cleaning, truncation and padding, in several scripts.
FIXED = [
    "", " ", "\t\n ", "a red circle", "ein roter Kreis", "赤い丸", "A RED CIRCLE!!", "Ein Roter KREIS?",
    "sep\x1cfile\x1dgroup\x1erecord\x1funit", "ideographic\u3000space", "line\u2028separator\u2029paragraph",
    "next\x85line", "no\u00a0break", "zero\u200bwidth", "bom\ufeffinside", "soft\u00adhyphen",
    "&amp;lt; &quot;quoted&quot; &#39;x&#39; &eacute;", "mojibake: Ã©tÃ© donâ€™t", "cafe\u0301 vs café",
    "ﬁ ﬀ ß ẞ ǅ Ⅻ ① ｆｕｌｌｗｉｄｔｈ", "👨‍👩‍👧 👍🏽 🇯🇵 ❤️ 🏳️‍🌈", "\u202eright-to-left override\u202c",
    "مرحبا\u200fבעולם\u200e mixed", "<s>", "</s>", "<pad><pad>", "<mask> word <unk>", "a</s>b<s>c",
    "नमस्ते " * 40, "สวัสดี" * 60, "赤い丸の写真" * 30, "ein Foto von einem roten Kreis " * 20,
    "Привет, мир! " * 25, "\x00\x01 control \x7f",
]
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz ABCXYZ éèàüößçñøåłęœ ",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя АБВГД ",
    "αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔ ",
    "ابتثجحخدذرسشصضطظعغفقكلمنهوي ",
    "אבגדהוזחטיכלמנסעפצקרשת ",
    "अआइईउऊएऐओऔकखगघचछजझटठडढतथदधनपफबभमयरलवशषसह्ािीुूेैोौं ",
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年 ",
    "あいうえおかきくけこさしすせそアイウエオカキクケコ赤青緑黄丸四角三角 ",
    "가나다라마바사아자차카타파하한국어문장 ",
    "กขคงจฉชซญดตถทนบปผพฟมยรลวศษสหอฮะาิีึืุู่้ ",
    "😀😂🥰👍🏽🐶🏖️🎉❤️☕🇯🇵 ",
    "0123456789 .,;:!?'\"()[]{}-–—…«»“”‘’&#@%*/\\\t\n\u3000\u00a0\u200b\x1c",
]


def corpus() -> list[str]:
    """Hand-picked edge cases, the scripts sample, every caption, and seeded mixes of words and characters."""
    words = [w for line in multilingual.SCRIPTS for w in line.split()]
    captions = [c for colour, shape in shapes.CLASSES for lang in multilingual.LANGUAGES
                for c in multilingual.captions(colour, shape, lang)]
    rng = random.Random(33)
    generated = []
    for i in range(1000):
        if i % 2:
            alphabet = "".join(rng.sample(ALPHABETS, rng.randint(1, 3)))
            generated.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))))
        else:
            separator = rng.choice([" ", "  ", ", ", "\n", "", "\u3000"])
            generated.append(separator.join(rng.choice(words) for _ in range(rng.randint(1, 60))))
    return FIXED + multilingual.SCRIPTS + captions + generated


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """The test tokenizer and a tiny XLM-RoBERTa config: a ``--text-model`` folder."""
    return multilingual.build_text_model(tmp_path_factory.mktemp("text-model") / "xlm-roberta-tiny")


def register(folder: Path, name: str, text_cfg: dict, vision_layers: int = 1) -> Path:
    """An open_clip architecture ``name`` (a small ViT and ``text_cfg``), as a ``--model-config`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {"image_size": 32, "layers": vision_layers, "width": 32, "patch_size": 8, "head_width": 16},
                "text_cfg": text_cfg,
            }
        )
    )
    return folder


def hf_text_cfg(**extra) -> dict:
    return {"hf_model_name": multilingual.HF_NAME, "hf_tokenizer_name": multilingual.HF_NAME, "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear", "context_length": 32, **extra}


# --- the tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"clean": "lower", "strip_sep_token": True}, {"clean": "canonicalize"}],
                         ids=["whitespace", "lower-strip-sep", "canonicalize"])
def test_the_tokenizer_gives_open_clips_ids_in_many_scripts(tmp_path, text_model, kwargs):
    """open_clip's HFTokenizer over the same folder, with the architecture's tokenizer options."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from imagesearch.export.sources.open_clip import write_tokenizer

    name = f"multi-tok-{len(kwargs)}-{kwargs.get('clean', 'whitespace')}"
    open_clip.add_model_config(register(tmp_path / "config", name, hf_text_cfg(tokenizer_kwargs=kwargs)))
    spec = write_tokenizer(name, 32, tmp_path / "tokenizer.json", text_model=text_model)
    assert (spec.kind, spec.pad_id, spec.context_length, spec.strip_sep_token) == (
        "hf",
        1,
        32,
        bool(kwargs.get("strip_sep_token")),
    )
    ours = Tokenizer(spec, tmp_path / "tokenizer.json")
    theirs = HFTokenizer(str(text_model), context_length=32, **kwargs)
    texts = corpus()
    assert len(texts) >= 1000
    got, expected = ours(texts), theirs(texts).numpy()
    assert got.dtype == np.int64 and got.shape == (len(texts), 32)
    mismatched = [t for t, a, b in zip(texts, got.tolist(), expected.tolist(), strict=True) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]!r}"
    # The test means something: most scripts are pieces of the vocabulary, not <unk>; long texts are cut.
    for line in multilingual.SCRIPTS:
        ids = ours([line])[0]
        content = ids[(ids > 3) & (ids != theirs.tokenizer.mask_token_id)]
        assert len(content) and (content != theirs.tokenizer.unk_token_id).mean() > 0.8, line
    long = ours(["ein Foto von einem roten Kreis " * 20])[0]
    assert long[0] == 0 and (long != 1).all()
    assert long[-1] == (0 if kwargs.get("strip_sep_token") else 2)  # </s> ends a cut text, or its 0


def test_whitespace_is_cleaned_as_open_clip_does_for_clip_models_too(tmp_path):
    """open_clip splits on str.split()'s whitespace (the \\x1c-\\x1f separators included)."""
    import open_clip

    from imagesearch.export.sources.open_clip import write_tokenizer

    ours = Tokenizer(write_tokenizer("ViT-B-32", 77, tmp_path / "clip.json"), tmp_path / "clip.json")
    texts = FIXED[:24] + [f"a{c}b" for c in "\x1c\x1d\x1e\x1f\x85\u2028\u3000\u00a0\u200b\u180e"]
    np.testing.assert_array_equal(ours(texts), open_clip.get_tokenizer("ViT-B-32")(texts).numpy())


# --- the export -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_xlm_roberta_tower_exports_with_every_variant_and_gate(tmp_path, text_model):
    config = register(tmp_path / "config", "xlmr-tiny", hf_text_cfg())
    card = export_model(ExportOptions(model="xlmr-tiny", model_config=config, text_model=text_model, fp16=True, int8=True),
                        tmp_path / "models", triton_kind="KIND_CPU")
    assert card.variants == ["fp32", "fp16", "int8"] and card.context_length == 32  # not the tower's 34 positions
    assert min(card.parity[f"{t}_fp32"] for t in ("visual", "textual")) >= 0.9999
    assert min(card.parity[f"{t}_int8"] for t in ("visual", "textual")) >= 0.995
    assert (card.tokenizer.kind, card.tokenizer.pad_id, card.tokenizer.clean) == ("hf", 1, "whitespace")
    import onnx

    textual = onnx.load(str(card.onnx_path(tmp_path / "models", "textual")))
    assert [i.name for i in textual.graph.input] == ["tokens"]  # the attention mask is computed in the graph
    assert "dims: 32" in (tmp_path / "models" / f"{card.slug}_textual" / "config.pbtxt").read_text()
    reference = np.load(tmp_path / "models" / card.reference)
    assert reference["tokens"].shape[1] == 32 and (reference["tokens"] == 1).any()  # padded with <pad>, as open_clip pads


@pytest.mark.slow
def test_an_nllb_style_encoder_tower_exports(tmp_path, text_model):
    """NLLB-CLIP's text tower: the encoder of an encoder-decoder model (M2M-100), its first token pooled."""
    from transformers import M2M100Config

    folder = shutil.copytree(text_model, tmp_path / "nllb-tiny")
    M2M100Config(vocab_size=json.loads((text_model / "config.json").read_text())["vocab_size"], d_model=32, encoder_layers=2,
                 decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                 max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2, dropout=0.0).save_pretrained(folder)
    config = register(tmp_path / "config", "nllb-tiny", hf_text_cfg(hf_pooler_type="cls_pooler", context_length=20))
    card = export_model(ExportOptions(model="nllb-tiny", model_config=config, text_model=folder, int8=True),
                        tmp_path / "models", triton_kind="KIND_CPU")
    assert min(card.parity.values()) >= 0.995 and card.parity["textual_fp32"] >= 0.9999
    assert card.context_length == 20


@pytest.mark.slow
def test_random_parity_ids_are_padded_for_a_tower_that_masks_them(tmp_path, text_model):
    """Without a tokenizer the parity batch is random ids, padded with the tower's pad id at the
    context length open_clip's tokenizer uses (a tower reading past its positions fails the export)."""
    config = register(tmp_path / "config", "xlmr-no-tok", hf_text_cfg(context_length=32))
    card = export_model(ExportOptions(model="xlmr-no-tok", model_config=config, text_model=text_model, tokenizer=False),
                        tmp_path / "models", triton_kind="KIND_CPU")
    tokens = np.load(tmp_path / "models" / card.reference)["tokens"]
    assert tokens.shape[1] == 32 and (tokens == 1).any() and card.parity["textual_fp32"] >= 0.9999
    too_long = register(tmp_path / "config", "xlmr-too-long", hf_text_cfg(context_length=40))  # 34 positions
    with pytest.raises(ExportError, match="own text encoder fails on the parity tokens .* of 40 tokens"):
        export_model(ExportOptions(model="xlmr-too-long", model_config=too_long, text_model=text_model), tmp_path / "other")


def test_a_hub_text_model_offline_fails_fast_and_says_how(tmp_path, text_model, capsys, monkeypatch):
    from imagesearch.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that cannot be reached, whatever the network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base = ["export", "--repository", str(tmp_path / "repo"), "--pretrained", "none"]
    assert main([*base, "--model", "xlm-roberta-base-ViT-B-32"]) == 2
    out = capsys.readouterr().out
    assert "the Hugging Face tokenizer xlm-roberta-base, which comes from the model hub" in out
    assert "huggingface-cli download xlm-roberta-base" in out and "--text-model /path/to/folder" in out
    assert main([*base, "--model", "ViT-B-32", "--text-model", str(text_model)]) == 2
    assert "--text-model is for architectures whose text tower or tokenizer is a Hugging Face model" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--model", "xlm-roberta-base-ViT-B-32", "--text-model", str(empty)]) == 2
    assert f"export failed: --text-model {empty} has no config.json" in capsys.readouterr().out
    assert not list((tmp_path / "repo").glob("*.json"))


def test_the_cli_exports_with_a_text_model_folder(tmp_path, text_model, capsys):
    from imagesearch.cli import main

    config = register(tmp_path / "config", "xlmr-cli", hf_text_cfg())
    assert (
        main(
            [
                "export",
                "--model",
                "xlmr-cli",
                "--model-config",
                str(config),
                "--text-model",
                str(text_model),
                "--pretrained",
                "none",
                "--slug",
                "xlmr-cli",
                "--repository",
                str(tmp_path / "repo"),
                "--triton-kind",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "exported xlmr-cli (xlmr-cli, dim 32, 32px)" in out and "textual_fp32 1.0000" in out
    card = load_card(tmp_path / "repo", "xlmr-cli")
    assert card.tokenizer.kind == "hf" and Tokenizer.from_card(card, tmp_path / "repo")(["赤い丸"]).shape == (1, 32)


@pytest.mark.slow
def test_xlm_roberta_base_vit_b_32_at_the_real_size_passes_its_gates(tmp_path, text_model):
    """The real architecture (XLM-RoBERTa base: 12 layers of 768, 250,002 tokens; ViT-B/32) with random
    weights: its text weights are over 1 GiB (kept beside the graph), fp32 and int8 pass their gates."""
    folder = shutil.copytree(text_model, tmp_path / "xlm-roberta-base")
    config = json.loads((folder / "config.json").read_text()) | {
        "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "max_position_embeddings": 514}
    (folder / "config.json").write_text(json.dumps(config))
    card = export_model(ExportOptions(model="xlm-roberta-base-ViT-B-32", text_model=folder, int8=True), tmp_path / "models",
                        triton_kind="KIND_CPU")
    assert (card.dim, card.context_length, card.image_size) == (512, 77, 224)
    assert min(card.parity[f"{t}_fp32"] for t in ("visual", "textual")) >= 0.9999
    assert min(card.parity[f"{t}_int8"] for t in ("visual", "textual")) >= 0.995
    assert (card.onnx_path(tmp_path / "models", "textual").parent / "model.onnx.data").stat().st_size > 1 << 30
