"""open_clip architectures that name a Hugging Face model for their text side: a text tower that is a
transformers model (``hf_model_name``: XLM-RoBERTa in the multilingual CLIPs, NLLB's encoder, mT5,
RoBERTa) and/or a transformers tokenizer (``hf_tokenizer_name``: those, and SigLIP).

open_clip reads that model's configuration and tokenizer with transformers' ``from_pretrained(name)``,
from the model hub. Offline, ``--text-model FOLDER`` (``ExportOptions.text_model``) names a local copy
of that folder (config.json and the tokenizer files; the weights come with ``--pretrained``), and the
architecture's names are pointed at it for this export only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import open_clip
from huggingface_hub import try_to_load_from_cache
from open_clip.tokenizer import HFTokenizer

from imagesearch.export.source import ExportError, ExportOptions, hub_unreachable

TOKENIZER_FILES = "config.json tokenizer.json tokenizer_config.json special_tokens_map.json sentencepiece.bpe.model"


def text_cfg(model: str) -> dict[str, Any]:
    return (open_clip.get_model_config(model) or {}).get("text_cfg", {})


def is_hf_tower(model: str) -> bool:
    """Whether the architecture's text tower is a transformers model (open_clip's ``HFTextEncoder``)."""
    return bool(text_cfg(model).get("hf_model_name"))


def _check_folder(folder: Path, needs_config: bool) -> None:
    if not folder.is_dir():
        raise ExportError(f"--text-model {folder} is not a folder")
    if needs_config and not (folder / "config.json").is_file():
        raise ExportError(f"--text-model {folder} has no config.json: it must hold the Hugging Face text model's "
                          "configuration and tokenizer files (the weights are not needed)")


def _hub_copy_missing(name: str, file: str) -> str | None:
    """Why transformers cannot read ``name``'s ``file`` now (not cached, hub unreachable), or None."""
    if Path(name).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None  # a local folder, or the user said: the local cache only
    if isinstance(try_to_load_from_cache(name, file), str):
        return None
    return hub_unreachable(urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co")


def _offline_hint(model: str, name: str) -> str:
    return (f"Download that folder elsewhere without its weights (`huggingface-cli download {name} {TOKENIZER_FILES}`; "
            f"the weights come with --pretrained) and pass it: `imagesearch export --model {model} --pretrained ... "
            "--text-model /path/to/folder`")


def create_kwargs(options: ExportOptions) -> dict[str, Any]:
    """Extra ``open_clip.create_model`` arguments for the architecture's text side ({} for open_clip's own
    tower): the text model read from ``options.text_model`` when given, and never its hub weights (the
    export loads a whole CLIP checkpoint, or random weights)."""
    cfg = text_cfg(options.model)
    names = [cfg.get("hf_model_name"), cfg.get("hf_tokenizer_name")]
    if options.text_model is not None and not any(names):
        raise ExportError(f"--text-model is for architectures whose text tower or tokenizer is a Hugging Face model; "
                          f"{options.model} has open_clip's own")
    name = cfg.get("hf_model_name")
    if not name:
        return {}
    if options.text_model is not None:
        _check_folder(Path(options.text_model), needs_config=True)
        local = str(Path(options.text_model).resolve())
        cfg = {**cfg, "hf_model_name": local, "hf_tokenizer_name": local}
    elif why := _hub_copy_missing(name, "config.json"):
        raise ExportError(f"{options.model}'s text tower is the Hugging Face model {name}, whose configuration and "
                          f"tokenizer come from the model hub: {why}. {_offline_hint(options.model, name)}")
    return {"pretrained_text": False, "text_cfg": {**cfg, "hf_model_pretrained": False}}


def load_tokenizer(model: str, context_length: int, text_model: Path | None = None) -> HFTokenizer:
    """open_clip's own tokenizer for the architecture (``HFTokenizer``), read from ``text_model``
    (``--text-model``) when given; fails with the way out when it needs the hub."""
    cfg = text_cfg(model)
    name = cfg.get("hf_tokenizer_name") or ""
    if cfg.get("tokenizer_mode"):
        raise ExportError(f"{model} tokenizes in open_clip's {cfg['tokenizer_mode']!r} mode, which the "
                          "export does not support (only the Hugging Face tokenizer's own output)")
    source = name
    if text_model is not None:
        _check_folder(Path(text_model), needs_config=is_hf_tower(model))
        source = str(Path(text_model).resolve())
    elif why := _hub_copy_missing(name, "tokenizer_config.json"):
        raise ExportError(f"{model} uses the Hugging Face tokenizer {name}, which comes from the model hub: "
                          f"{why}. {_offline_hint(model, name)}")
    try:
        return HFTokenizer(source, context_length=context_length, **cfg.get("tokenizer_kwargs", {}))
    except Exception as exc:
        raise ExportError(
            f"{model} uses the Hugging Face tokenizer {name!r}, which could not be loaded from {source} "
            f"({type(exc).__name__}: {exc}). {_offline_hint(model, name)} (or populate the Hugging Face cache "
            "and set HF_HUB_OFFLINE=1)") from exc
