"""open_clip -> the export's two-tower contract: the model with its weights (failing fast, with a
clear message, when they cannot be had offline), the towers as torch modules, and the tokenizer as a
``tokenizers`` file (the CLIP BPE, or the Hugging Face tokenizer of the architectures that name one:
see ``hf_text``).

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
from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, bytes_to_unicode, default_bpe
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn

from imagesearch.export.source import ExportError, ExportOptions, Source, hub_unreachable
from imagesearch.export.sources import hf_text
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


def check_architecture(options: ExportOptions) -> None:
    """Register ``--model-config``'s architectures; refuse an unknown name, with the closest known ones."""
    if options.model_config:
        open_clip.add_model_config(options.model_config)
    known = open_clip.list_models()
    if options.model not in known:
        close = difflib.get_close_matches(options.model, known, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ExportError(f"unknown open_clip model {options.model!r}.{hint} (`open_clip.list_models()` lists all)")


def load_model(options: ExportOptions):
    """Create the open_clip model with the requested weights, failing fast with a clear message."""
    check_architecture(options)
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
    text_side = hf_text.create_kwargs(options)
    why = _weights_unreachable(options.model, pretrained) if pretrained and not Path(pretrained).exists() else None
    try:
        if why:
            raise ConnectionError(why)
        model = open_clip.create_model(options.model, pretrained=pretrained, device="cpu", **text_side)
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


def load_tokenizer(model_name: str, context_length: int, text_model: Path | None = None):
    """open_clip's own tokenizer for the model: what the exported one must reproduce."""
    if hf_text.text_cfg(model_name).get("hf_tokenizer_name"):
        return hf_text.load_tokenizer(model_name, context_length, text_model)
    return open_clip.get_tokenizer(model_name, context_length=context_length)


def write_tokenizer(model_name: str, context_length: int, path: Path, text_model: Path | None = None,
                    tokenizer=None) -> TokenizerSpec:
    """The model's tokenizer as a ``tokenizers`` file, and its spec. ``tokenizer``: open_clip's
    tokenizer for the model when already loaded (``load_tokenizer``)."""
    text_cfg = hf_text.text_cfg(model_name)
    kwargs = text_cfg.get("tokenizer_kwargs", {})
    if not text_cfg.get("hf_tokenizer_name"):
        sot, eot = _clip_bpe_tokenizer(path)
        return TokenizerSpec(
            kind="clip_bpe", file=path.name, context_length=context_length,
            clean=kwargs.get("clean", "lower"), sot_id=sot, eot_id=eot,
        )
    reference = tokenizer or hf_text.load_tokenizer(model_name, context_length, text_model)
    hf = reference.tokenizer  # transformers' tokenizer, whose pipeline runs in its backend
    # The backend as transformers runs it (a tokenizer class may rebuild parts of the folder's tokenizer.json).
    hf.backend_tokenizer.save(str(path))
    return TokenizerSpec(
        kind="hf", file=path.name, context_length=context_length, clean=kwargs.get("clean", "whitespace"),
        strip_sep_token=reference.strip_sep_token, sep_id=hf.sep_token_id if reference.strip_sep_token else None,
        pad_id=int(hf.pad_token_id or 0), padding_side=hf.padding_side, truncation_side=hf.truncation_side,
    )


# ----------------------------------------------------------------------------------------------
# the source


def open_clip_source(options: ExportOptions) -> Source:
    check_architecture(options)
    hf_tower = hf_text.is_hf_tower(options.model)
    # What open_clip's get_tokenizer pads and cuts to. Not model.context_length: for a transformers
    # tower that is the size of its position table.
    context_length = int(hf_text.text_cfg(options.model).get("context_length", DEFAULT_CONTEXT_LENGTH))
    # Loaded first: a tokenizer that cannot be had fails the export before a big checkpoint loads.
    tokenizer = load_tokenizer(options.model, context_length, options.text_model) if options.tokenizer else None
    model = load_model(options)
    cfg = open_clip.get_model_preprocess_cfg(model)  # what open_clip's own transform uses for this model
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    text_cfg = open_clip.get_model_config(options.model)["text_cfg"]
    vocab_size = int(getattr(model, "vocab_size", 0) or text_cfg.get("vocab_size", 49408))
    return Source(
        family="open_clip", architecture=options.model,
        visual=VisualTower(model, mean, std).eval(), textual=TextualTower(model).eval(),
        image_size=size, mean=mean, std=std,  # type: ignore[arg-type]
        interpolation=cfg.get("interpolation", "bicubic"), resize_mode=cfg.get("resize_mode", "shortest"),
        fill_color=int(cfg.get("fill_color", 0)), context_length=context_length, vocab_size=vocab_size,
        pad_id=int(model.text.config.pad_token_id) if hf_tower else None,
        write_tokenizer=(lambda path: write_tokenizer(options.model, context_length, path, tokenizer=tokenizer))
        if tokenizer else None,
        tokenize=(lambda texts: tokenizer(texts).numpy()) if tokenizer else None,
        versions={"open_clip_version": open_clip.__version__, "exported_with": f"open_clip {open_clip.__version__}"},
    )
