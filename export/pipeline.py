"""``export_model``: a model family's towers -> checked ONNX files (+ variants), tokenizer, Triton
configs and the model description in a model repository.

Everything is written into a staging folder inside the repository and moved into place only after
every check passed, so a failed export leaves the model that was there intact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from imagesearch.export.graph import declare_output_shape, export_graph, gather_weights
from imagesearch.export.parity import ParityBatch, check_parity, parity_batch, save_reference
from imagesearch.export.source import ExportOptions, Source
from imagesearch.export.triton_config import TritonOptions, write_configs
from imagesearch.export.variants import WRITERS
from imagesearch.model_card import (
    INT8_FORMAT,
    PARITY_MIN,
    TOWERS,
    VARIANT_FILES,
    ModelCard,
    TokenizerSpec,
    Tower,
    make_slug,
    model_name,
    version_dir,
)
from imagesearch.tokenizer import Tokenizer


def export_model(options: ExportOptions, repository: Path, *, triton_kind: str = "KIND_GPU",
                 triton_options: TritonOptions | None = None) -> ModelCard:
    """Export towers (+ variants), tokenizer, Triton configs and the model description into ``repository``."""
    torch.manual_seed(0)  # random weights (``--pretrained none``) are the same on every run
    source = load_source(options)
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    slug = options.slug or make_slug(source.architecture, options.pretrained)
    with tempfile.TemporaryDirectory(prefix=f"{slug}-", dir=repository) as tmp:
        staging = Path(tmp)
        tokenizer = source.write_tokenizer(staging / f"{slug}.tokenizer.json") if source.write_tokenizer else None
        batch = parity_batch(source, options.parity_batch, Tokenizer(tokenizer, staging / tokenizer.file) if tokenizer else None)
        folders = {tower: version_dir(staging, slug, tower) for tower in TOWERS}
        parity = {f"{tower}_fp32": export_tower(source, tower, folders[tower], batch, slug) for tower in TOWERS}
        variants = ["fp32"] + [variant for variant, wanted in (("fp16", options.fp16), ("int8", options.int8)) if wanted]
        for variant in variants[1:]:
            for tower in TOWERS:
                parity[f"{tower}_{variant}"] = write_variant(variant, tower, folders[tower], batch, slug)
        card = describe(options, source, slug, batch, tokenizer, variants, parity)
        save_reference(batch, staging / card.reference)
        write_configs(card, staging, triton_options or TritonOptions(kind=triton_kind))
        publish(staging, repository, card)
    return card


def load_source(options: ExportOptions) -> Source:
    """The chosen family's model as a ``Source``."""
    # Imported here, only for the family chosen: each needs its own library (open_clip, transformers).
    if options.family == "blip2":
        from imagesearch.export.sources.blip2 import blip2_source

        return blip2_source(options)
    from imagesearch.export.sources.open_clip import open_clip_source

    return open_clip_source(options)


def export_tower(source: Source, tower: Tower, folder: Path, batch: ParityBatch, slug: str) -> float:
    """Write a tower's fp32 graph into ``folder`` and check it; return its worst parity cosine."""
    path = folder / VARIANT_FILES["fp32"]
    module = source.visual if tower == "visual" else source.textual
    export_graph(module, torch.from_numpy(batch.inputs[tower][:2]), tower, path)
    gather_weights(path)
    declare_output_shape(path, batch.references[tower].shape[1:])
    return check_parity(path, batch.references[tower], batch.inputs[tower], PARITY_MIN["fp32"], f"{slug} {tower} fp32")


def write_variant(variant: str, tower: Tower, folder: Path, batch: ParityBatch, slug: str) -> float:
    """Write a variant of a tower's fp32 graph beside it and check it; return its worst parity cosine."""
    path = folder / VARIANT_FILES[variant]
    WRITERS[variant](folder / VARIANT_FILES["fp32"], path)
    return check_parity(path, batch.references[tower], batch.inputs[tower], PARITY_MIN[variant], f"{slug} {tower} {variant}")


def describe(options: ExportOptions, source: Source, slug: str, batch: ParityBatch, tokenizer: TokenizerSpec | None,
             variants: list[str], parity: dict[str, float]) -> ModelCard:
    """The model description: what the services need to preprocess, tokenize and check."""
    image = batch.references["visual"]
    return ModelCard(
        slug=slug, family=source.family, architecture=source.architecture, pretrained=options.pretrained,
        dim=int(image.shape[-1]), vectors_per_image=int(image.shape[1]) if image.ndim == 3 else 1,
        image_size=source.image_size, mean=source.mean, std=source.std,
        interpolation=source.interpolation, resize_mode=source.resize_mode, fill_color=source.fill_color,
        context_length=source.context_length,
        tokenizer=tokenizer or TokenizerSpec(kind="clip_bpe", file="", context_length=source.context_length),
        variants=variants, **source.versions, parity=parity,
        int8_format=INT8_FORMAT if options.int8 else "", reference=f"{slug}.reference.npz",
    )


def publish(staging: Path, repository: Path, card: ModelCard) -> None:
    """Move the checked export from ``staging`` into ``repository``, replacing the model's old files."""
    for path in staging.rglob("*"):  # readable by the services' users (onnx writes weight files 0600)
        path.chmod(0o755 if path.is_dir() else 0o644)
    for tower in TOWERS:
        dest = repository / model_name(card.slug, tower)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging / model_name(card.slug, tower), dest)
    if card.tokenizer.file:
        os.replace(staging / card.tokenizer.file, repository / card.tokenizer.file)
    os.replace(staging / card.reference, repository / card.reference)
    card.save(repository)
