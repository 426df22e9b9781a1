"""The model description written by ``imagesearch export``, and the export/runtime contract.

The description lives beside the Triton model folders as ``<repository>/<slug>.json`` (Triton only
loads sub-folders, so the file does not disturb it), with the tokenizer as ``<slug>.tokenizer.json``.
The contract (tower names, tensor names and dtypes, the folder layout, variant file names, parity
gates) is defined here once; the export, the Triton config builder and both encoders import it.

    <repository>/<slug>_visual/1/model.onnx     (+ model.fp16.onnx, model.int8.onnx, config.pbtxt)
    <repository>/<slug>_textual/1/model.onnx
    <repository>/<slug>.json, <slug>.tokenizer.json, <slug>.reference.npz
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Tower = Literal["visual", "textual"]
TOWERS: tuple[Tower, ...] = ("visual", "textual")
# Each tower's one input: (tensor name, numpy dtype). Pixels are uint8 [B,H,W,3] RGB at the model's
# size, tokens int64 [B,context] (0-padded); the one output is float32, L2-normalized: [B,dim] for a
# text, and for an image [B,dim] (CLIP) or [B,vectors_per_image,dim] (BLIP-2: one per Q-Former query,
# an image scoring its best one against a text).
INPUTS: dict[str, tuple[str, str]] = {"visual": ("pixels", "uint8"), "textual": ("tokens", "int64")}
OUTPUT = "embedding"
MODEL_VERSION = "1"  # Triton's version folder

Variant = Literal["fp32", "fp16", "int8"]
VARIANT_FILES: dict[str, str] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
# The Triton config parameter that names the variant a model serves (export writes it, the Triton
# encoder reads it; a config written by hand may name only the file, which then says it).
VARIANT_PARAMETER = "imagesearch_variant"
# The parity gate: the worst per-row cosine each variant must reach against open_clip's torch output,
# at export and again when a service loads the file (see ``reference_path``).
PARITY_MIN: dict[str, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.995}
# How the int8 files are quantized (recorded in the card, so a repository says what it holds).
# 7-bit signed weights (``reduce_range``), per channel, with dynamic uint8 activations: on x86 CPUs
# without VNNI (AVX2, AVX-512F) ONNX Runtime adds pairs of uint8 x int8 products in saturating 16-bit
# lanes, and full-range weights overflow them (cosine 0.98 to fp32); 7-bit weights cannot
# (2 x 255 x 64 < 32767), so every CPU computes the same integers, and VNNI CPUs keep their fast
# path. Unsigned weights are portable too but slower than fp32 on VNNI CPUs. docs/models.md, "int8", has figures.
INT8_FORMAT = ("dynamic; int8 weights, 7-bit range (reduce_range), per channel; uint8 activations;"
               " matrix products and embedding tables only (the patch convolution stays fp32)")
# The ops quantized: ONNX Runtime's ConvInteger (an im2col, then integer products) is slower than the
# fp32 Conv it would replace, which does a small share of the model's work (bench/bench_int8.py).
INT8_OPS = ("MatMul", "Gather")


Family = Literal["open_clip", "blip2"]
FAMILIES: tuple[Family, ...] = ("open_clip", "blip2")


class TokenizerSpec(BaseModel):
    kind: Literal["clip_bpe", "hf"] = "clip_bpe"
    file: str = Field(description="tokenizer.json (HF tokenizers format), relative to the repository")
    context_length: int
    # open_clip's text cleaning: lower | whitespace | canonicalize; none: the tokenizer file's own
    # normalizer only (BLIP-2's BERT tokenizer, as transformers runs it)
    clean: str = "lower"
    # hf: open_clip's HFTokenizer options and what transformers pads and cuts with
    strip_sep_token: bool = False  # the separator's id (sep_id) becomes 0 in the output
    sep_id: int | None = None
    pad_id: int = 0
    padding_side: Literal["right", "left"] = "right"
    truncation_side: Literal["right", "left"] = "right"
    sot_id: int | None = None  # CLIP BPE only
    eot_id: int | None = None  # CLIP BPE only


class ModelCard(BaseModel):
    slug: str
    family: Family = "open_clip"
    architecture: str
    pretrained: str
    dim: int
    vectors_per_image: int = Field(1, ge=1, description="embeddings per image (BLIP-2: one per Q-Former query)")
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    resize_mode: Literal["shortest", "squash", "longest"] = "shortest"
    fill_color: int = 0
    context_length: int
    tokenizer: TokenizerSpec
    variants: list[Variant] = ["fp32"]
    open_clip_version: str = ""
    exported_with: str = Field("", description="the library the weights were read with, and its version")
    parity: dict[str, float] = Field(default_factory=dict, description="worst cosine vs torch, per check")
    int8_format: str = Field("", description="how the int8 variant was quantized (INT8_FORMAT); empty when none")
    reference: str = Field("", description="the parity batch and torch's outputs for it (.npz), relative to the repository")

    def model_name(self, tower: Tower) -> str:
        return model_name(self.slug, tower)

    def image_shape(self) -> tuple[int, ...]:
        """One image's embedding shape: (dim,) or (vectors_per_image, dim)."""
        return (self.dim,) if self.vectors_per_image == 1 else (self.vectors_per_image, self.dim)

    @property
    def visual_name(self) -> str:
        return self.model_name("visual")

    @property
    def textual_name(self) -> str:
        return self.model_name("textual")

    def onnx_path(self, repository: Path, tower: Tower, variant: Variant = "fp32") -> Path:
        if variant not in self.variants:
            raise FileNotFoundError(
                f"model {self.slug!r} has no {variant} variant (exported: {', '.join(self.variants)}); "
                f"run `imagesearch export ... --{variant}`"
            )
        return version_dir(repository, self.slug, tower) / VARIANT_FILES[variant]

    def reference_path(self, repository: Path) -> Path | None:
        """The reference batch that services check a loaded variant against (None: the card names none)."""
        return Path(repository) / self.reference if self.reference else None

    def save(self, repository: Path) -> Path:
        path = repository / f"{self.slug}.json"
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def model_name(slug: str, tower: Tower) -> str:
    """The Triton model (folder) name of one tower."""
    return f"{slug}_{tower}"


def version_dir(repository: Path, slug: str, tower: Tower) -> Path:
    """Where a tower's ONNX files live: ``<repository>/<slug>_<tower>/1``."""
    return Path(repository) / model_name(slug, tower) / MODEL_VERSION


def make_slug(architecture: str, pretrained: str) -> str:
    """`ViT-B-32` + `laion2b_s34b_b79k` -> `vit-b-32-laion2b-s34b-b79k` (valid for Triton and ES)."""
    if pretrained.lower() in ("", "none", "random"):
        tag = "random"
    elif "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        tag = Path(pretrained).stem  # a local checkpoint
    else:
        tag = pretrained
    # `blip2` + `Salesforce/blip2-itm-vit-g` -> `blip2-itm-vit-g`, not `blip2-blip2-...`
    raw = (tag if tag.lower().startswith(architecture.lower()) else f"{architecture}-{tag}").lower()
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")


def list_models(repository: Path) -> list[str]:
    return sorted(p.stem for p in Path(repository).glob("*.json") if not p.name.endswith(".tokenizer.json"))


def load_card(repository: Path, slug: str = "") -> ModelCard:
    """Read the description of ``slug`` (or of the only model there when ``slug`` is empty)."""
    repository = Path(repository)
    available = list_models(repository) if repository.is_dir() else []
    if not slug:
        if not available:
            raise FileNotFoundError(
                f"no exported model in {repository.resolve()}; run `imagesearch export` first "
                "(or set IMAGESEARCH_MODEL_REPOSITORY)"
            )
        slug = available[0]
    path = repository / f"{slug}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"model {slug!r} is not in {repository.resolve()} (available: {', '.join(available) or 'none'}); "
            "run `imagesearch export` for it or set IMAGESEARCH_MODEL"
        )
    return ModelCard.model_validate(json.loads(path.read_text()))
