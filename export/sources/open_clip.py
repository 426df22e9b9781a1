"""open_clip -> the export's two-tower contract: the model with its weights (failing fast, with a
clear message, when they cannot be had offline), the towers as torch modules, and the CLIP tokenizer
as a ``tokenizers`` file.

The visual tower takes uint8 [B,H,W,3] RGB (already resized/cropped on the CPU side) and does the
float conversion and mean/std normalization itself; both towers return L2-normalized float32
embeddings.
"""

from __future__ import annotations

import difflib
import gzip
import os
from pathlib import Path
from urllib.parse import urlsplit

import open_clip
import torch
from huggingface_hub import try_to_load_from_cache
from open_clip.tokenizer import bytes_to_unicode, default_bpe
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn

from imagesearch.export.source import ExportError, ExportOptions, Source, hub_unreachable
from imagesearch.model_card import TokenizerSpec

# ----------------------------------------------------------------------------------------------
# loading


def _weights_unreachable(model: str, tag: str) -> str | None:
    """Why the weights of a pretrained tag cannot be downloaded now, if they are not cached locally."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None  # the user said: use the local cache only
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if cfg.get("hf_hub"):
        repo = cfg["hf_hub"].rstrip("/")
        if any(isinstance(try_to_load_from_cache(repo, name), str)
               for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")):
            return None
        host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    else:
        host = urlsplit(cfg.get("url", "")).hostname
    return hub_unreachable(host) if host else None


def load_model(options: ExportOptions):
    """Create the open_clip model with the requested weights, failing fast with a clear message."""
    if options.model_config:
        open_clip.add_model_config(options.model_config)
    known = open_clip.list_models()
    if options.model not in known:
        close = difflib.get_close_matches(options.model, known, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ExportError(f"unknown open_clip model {options.model!r}.{hint} (`open_clip.list_models()` lists all)")

    given = options.pretrained
    pretrained: str | None = None if given.lower() in ("", "none", "random") else given
    if pretrained is not None and not Path(pretrained).exists():
        tags = open_clip.list_pretrained_tags_by_model(options.model)
        if pretrained not in tags:
            if "/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
                raise ExportError(f"checkpoint file {pretrained} does not exist")
            raise ExportError(
                f"{options.model} has no pretrained tag {pretrained!r}; known tags: {', '.join(tags) or 'none'}"
            )
    why = _weights_unreachable(options.model, pretrained) if pretrained and not Path(pretrained).exists() else None
    try:
        if why:
            raise ConnectionError(why)
        model = open_clip.create_model(options.model, pretrained=pretrained, device="cpu")
    except Exception as exc:
        if pretrained and not Path(pretrained).exists():
            raise ExportError(
                f"could not get the weights for {options.model} / {pretrained}: {type(exc).__name__}: {exc}. "
                "They are downloaded from the model hub on first use; offline, download the checkpoint "
                "elsewhere (e.g. open_clip_pytorch_model.bin) and pass its path: "
                f"`imagesearch export --model {options.model} --pretrained /path/to/checkpoint.bin`"
            ) from exc
        raise ExportError(f"could not create {options.model} from {pretrained}: {exc}") from exc
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# towers


class VisualTower(nn.Module):
    """uint8 [B,H,W,3] -> normalize -> encode_image -> L2-normalized float32 [B,D]."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        # (x/255 - mean)/std == (x - 255*mean)/(255*std): one subtract and one divide in the graph.
        self.register_buffer("offset", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(self.offset.dtype)
        x = (x - self.offset) / self.scale
        return self.model.encode_image(x, normalize=True).float()


class TextualTower(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=True).float()


# ----------------------------------------------------------------------------------------------
# tokenizer


def _clip_bpe_tokenizer(path: Path) -> tuple[int, int]:
    """Write open_clip's CLIP BPE vocabulary as a Hugging Face tokenizers file; return (sot, eot)."""
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [(a, b) for a, b in (m.split() for m in lines[1 : 49152 - 256 - 2 + 1])]  # as open_clip's SimpleTokenizer
    byte_chars = list(bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab_list += ["<start_of_text>", "<end_of_text>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False))
    # Words are split in imagesearch.tokenizer with open_clip's own regex; here only bytes -> symbols.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.save(str(path))
    return vocab["<start_of_text>"], vocab["<end_of_text>"]


def write_tokenizer(model_name: str, context_length: int, path: Path) -> TokenizerSpec:
    text_cfg = open_clip.get_model_config(model_name).get("text_cfg", {})
    kwargs = text_cfg.get("tokenizer_kwargs", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name:
        sot, eot = _clip_bpe_tokenizer(path)
        return TokenizerSpec(
            kind="clip_bpe", file=path.name, context_length=context_length,
            clean=kwargs.get("clean", "lower"), sot_id=sot, eot_id=eot,
        )
    try:
        tok = open_clip.get_tokenizer(model_name)
        tok.tokenizer.backend_tokenizer.save(str(path))
    except Exception as exc:
        raise ExportError(
            f"{model_name} uses the Hugging Face tokenizer {hf_name!r}, which could not be loaded "
            f"({type(exc).__name__}: {exc}). It needs `pip install transformers` and the hub once "
            "(or a populated HF cache with HF_HUB_OFFLINE=1)."
        ) from exc
    return TokenizerSpec(
        kind="hf", file=path.name, context_length=context_length, clean=kwargs.get("clean", "whitespace"),
        strip_sep_token=bool(kwargs.get("strip_sep_token", False)), pad_id=int(tok.tokenizer.pad_token_id or 0),
    )


# ----------------------------------------------------------------------------------------------
# the source


def open_clip_source(options: ExportOptions) -> Source:
    model = load_model(options)
    cfg = open_clip.get_model_preprocess_cfg(model)  # what open_clip's own transform uses for this model
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    context_length = int(model.context_length)
    vocab_size = int(getattr(model, "vocab_size", 0) or open_clip.get_model_config(options.model)["text_cfg"].get("vocab_size", 49408))
    return Source(
        family="open_clip", architecture=options.model,
        visual=VisualTower(model, mean, std).eval(), textual=TextualTower(model).eval(),
        image_size=size, mean=mean, std=std,  # type: ignore[arg-type]
        interpolation=cfg.get("interpolation", "bicubic"), resize_mode=cfg.get("resize_mode", "shortest"),
        fill_color=int(cfg.get("fill_color", 0)), context_length=context_length, vocab_size=vocab_size,
        write_tokenizer=(lambda path: write_tokenizer(options.model, context_length, path)) if options.tokenizer else None,
        versions={"open_clip_version": open_clip.__version__, "exported_with": f"open_clip {open_clip.__version__}"},
    )
