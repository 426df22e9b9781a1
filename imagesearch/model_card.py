"""The model description written by ``imagesearch export``: the one source of truth the runtime reads.

It lives beside the Triton model folders as ``<repository>/<slug>.json`` (Triton only loads
sub-folders, so the file does not disturb it), with the tokenizer as ``<slug>.tokenizer.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Variant = Literal["fp32", "fp16", "int8"]
VARIANT_FILES: dict[str, str] = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


class TokenizerSpec(BaseModel):
    kind: Literal["clip_bpe", "hf"] = "clip_bpe"
    file: str = Field(description="tokenizer.json (HF tokenizers format), relative to the repository")
    context_length: int
    clean: str = "lower"  # open_clip's text cleaning: lower | whitespace | canonicalize
    strip_sep_token: bool = False
    pad_id: int = 0
    sot_id: int | None = None  # CLIP BPE only
    eot_id: int | None = None  # CLIP BPE only


class ModelCard(BaseModel):
    slug: str
    architecture: str
    pretrained: str
    dim: int
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
    parity: dict[str, float] = Field(default_factory=dict, description="worst cosine vs torch, per check")

    @property
    def visual_name(self) -> str:
        return f"{self.slug}_visual"

    @property
    def textual_name(self) -> str:
        return f"{self.slug}_textual"

    def onnx_path(self, repository: Path, tower: Literal["visual", "textual"], variant: Variant = "fp32") -> Path:
        if variant not in self.variants:
            raise FileNotFoundError(
                f"model {self.slug!r} has no {variant} variant (exported: {', '.join(self.variants)}); "
                f"run `imagesearch export ... --{variant}`"
            )
        name = self.visual_name if tower == "visual" else self.textual_name
        return repository / name / "1" / VARIANT_FILES[variant]

    def save(self, repository: Path) -> Path:
        path = repository / f"{self.slug}.json"
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def make_slug(architecture: str, pretrained: str) -> str:
    """`ViT-B-32` + `laion2b_s34b_b79k` -> `vit-b-32-laion2b-s34b-b79k` (valid for Triton and ES)."""
    if pretrained.lower() in ("", "none", "random"):
        tag = "random"
    elif "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        tag = Path(pretrained).stem  # a local checkpoint
    else:
        tag = pretrained
    raw = f"{architecture}-{tag}".lower()
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
