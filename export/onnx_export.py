"""open_clip (or BLIP-2, export/blip2.py) -> ONNX: the visual and textual towers, tokenizer, model
description and Triton configs.

The visual graph takes uint8 [B,H,W,3] RGB (already resized/cropped on the CPU side) and does the
float conversion and mean/std normalization itself; both graphs return L2-normalized float32
embeddings. Every export is checked against open_clip's torch outputs (the parity gate).
"""

from __future__ import annotations

import difflib
import gzip
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
import torch
from torch import nn

from imagesearch.encoders import row_cosines
from imagesearch.model_card import (
    INPUTS,
    INT8_FORMAT,
    INT8_OPS,
    OUTPUT,
    PARITY_MIN,
    TOWERS,
    VARIANT_FILES,
    ModelCard,
    TokenizerSpec,
    make_slug,
    model_name,
    version_dir,
)

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TEXTS = [
    "a photo of a dog running on a beach",
    "a red circle",
    "A city skyline at NIGHT, with lights!",
    "naïve café ☕ — 東京",
    "",
    "a very long caption " * 20,
]


class ExportError(RuntimeError):
    """The export cannot be done or did not pass its checks; the message says why."""


@dataclass
class ExportOptions:
    model: str = "ViT-B-32"  # the open_clip architecture (ignored for BLIP-2)
    pretrained: str = "none"
    family: str = "open_clip"  # open_clip | blip2
    slug: str = ""
    # open_clip: an extra model config (JSON file or folder); BLIP-2 with random weights: a folder
    # with config.json and the tokenizer files
    model_config: Path | None = None
    fp16: bool = False
    int8: bool = False
    parity_batch: int = 4
    tokenizer: bool = True  # False: skip tokenizer assets (parity checks of models whose tokenizer needs the hub)


# ----------------------------------------------------------------------------------------------
# loading


def _import_open_clip():
    import open_clip

    return open_clip


def _weights_unreachable(open_clip, model: str, tag: str) -> str | None:
    """Why the weights of a pretrained tag cannot be downloaded now, if they are not cached locally.

    The hub client retries a dead connection for most of a minute; one quick connect says the same.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None  # the user said: use the local cache only
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo = cfg["hf_hub"].rstrip("/")
        if any(isinstance(try_to_load_from_cache(repo, name), str)
               for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")):
            return None
        host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    else:
        host = urlsplit(cfg.get("url", "")).hostname
    return hub_unreachable(host) if host else None


def hub_unreachable(host: str) -> str | None:
    """Why ``host`` cannot be reached now (one quick connect), or None."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None  # the user said: use the local cache only
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f"the model hub ({host}) is unreachable: {exc}"
    return None


def load_model(options: ExportOptions):
    """Create the open_clip model with the requested weights, failing fast with a clear message."""
    open_clip = _import_open_clip()
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
    why = _weights_unreachable(open_clip, options.model, pretrained) if pretrained and not Path(pretrained).exists() else None
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
# graphs


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


def _export_graph(module: nn.Module, example: torch.Tensor, tower: str, path: Path) -> None:
    input_name = INPUTS[tower][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The fused attention fast path (aten::_native_multi_head_attention) has no ONNX symbolic.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_axes={input_name: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter handles open_clip's towers without graph breaks
            do_constant_folding=True,
        )


# Protobuf cannot hold a message over 2 GiB, so bigger graphs (BLIP-2's ViT-g: 1.2 billion weights)
# keep their weights in one file beside the graph, ``<file>.data`` (ONNX Runtime and Triton read it
# from there). Below this size everything stays in one file.
EXTERNAL_DATA_BYTES = 1 << 30


def _weight_bytes(path: Path) -> int:
    """The size of a graph's weights, wherever they are stored."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inline = sum(len(t.raw_data) for t in model.graph.initializer)
    external = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return inline + sum((path.parent / name).stat().st_size for name in external)


def save_onnx(model, path: Path) -> None:
    """Save a graph: in one file, or with its weights in ``<file>.data`` when they are large."""
    import onnx

    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size > EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save(model, str(path))


def _gather_weights(path: Path) -> None:
    """After torch's export: a graph over 2 GiB comes with one file per weight tensor beside it;
    gather them into ``<file>.data`` (and a graph over ``EXTERNAL_DATA_BYTES`` gets one too)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    scattered = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    if not scattered and _weight_bytes(path) <= EXTERNAL_DATA_BYTES:
        return
    model = onnx.load(str(path))  # with the weights, wherever they are
    for name in scattered:
        (path.parent / name).unlink()
    save_onnx(model, path)


def _declare_output_shape(path: Path, shape: tuple[int, ...]) -> None:
    """Write the output's per-item shape into the graph (the exporter can leave it symbolic, as for
    BLIP-2's [queries, dim]), so the file says what Triton's config declares. Weights stay where they are."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, size in zip(list(dims)[1:], shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    onnx.save(model, str(path))


# ----------------------------------------------------------------------------------------------
# parity


def parity_images(batch: int, size: int) -> np.ndarray:
    """A fixed, varied uint8 batch: noise, gradients, flat colours."""
    rng = np.random.default_rng(1234)
    images = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    if batch > 1:
        images[1] = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)], -1).astype(np.uint8)
    if batch > 2:
        images[2] = np.array([200, 30, 40], np.uint8)
    return images


def _run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    from imagesearch.encoders.onnx import make_session

    session = make_session(path, variant="fp16" if path.name == VARIANT_FILES["fp16"] else "fp32")
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def check_parity(onnx_path: Path, reference: np.ndarray, batch: np.ndarray, minimum: float, what: str) -> float:
    """Worst cosine between ONNX and the reference over every embedding (each of an image's several
    for BLIP-2); raises ExportError below ``minimum``."""
    worst = float(row_cosines(_run_onnx(onnx_path, batch), reference).min())
    log.info("parity %s: worst cosine %.7f (need >= %s)", what, worst, minimum)
    if not worst >= minimum:
        raise ExportError(f"parity check failed for {what}: worst cosine {worst:.7f} < {minimum}")
    return worst


# ----------------------------------------------------------------------------------------------
# variants


def _write_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types: uint8/int64 in, float32 out, as for fp32, so clients need not care.
    converted = convert_float_to_float16(model, keep_io_types=True)
    save_onnx(converted, dst)


def _write_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization in the portable format (``INT8_FORMAT``): the same results on every CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = _weight_bytes(src) > EXTERNAL_DATA_BYTES
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=list(INT8_OPS), use_external_data_format=large)


# ----------------------------------------------------------------------------------------------
# tokenizer


def _clip_bpe_tokenizer(path: Path) -> tuple[int, int]:
    """Write open_clip's CLIP BPE vocabulary as a Hugging Face tokenizers file; return (sot, eot)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from tokenizers import Tokenizer, models, pre_tokenizers

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
    open_clip = _import_open_clip()
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
# the whole export


@dataclass
class Source:
    """A loaded model as the export needs it, whatever library it came from: the two towers (torch
    modules with the ONNX contract: uint8 pixels / token ids in, normalized embeddings out), what
    the shared preprocessing must do for it, and how to write its tokenizer."""

    family: str
    architecture: str
    visual: nn.Module
    textual: nn.Module
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    fill_color: int
    context_length: int
    vocab_size: int
    write_tokenizer: Callable[[Path], TokenizerSpec] | None  # None: parity on random token ids
    versions: dict[str, str]  # {"open_clip_version": ..., "exported_with": ...}


def open_clip_source(options: ExportOptions) -> Source:
    open_clip = _import_open_clip()
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


def export_model(options: ExportOptions, repository: Path, *, triton_kind: str = "KIND_GPU", triton_options=None) -> ModelCard:
    """Export towers (+ variants), tokenizer, Triton configs and the model description into ``repository``."""
    from imagesearch.export.triton_config import TritonOptions, write_configs

    torch.manual_seed(0)
    if options.family == "blip2":
        from imagesearch.export.blip2 import blip2_source

        source = blip2_source(options)
    else:
        source = open_clip_source(options)
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    slug = options.slug or make_slug(source.architecture, options.pretrained)
    visual, textual, size, context_length = source.visual, source.textual, source.image_size, source.context_length

    images = parity_images(options.parity_batch, size)
    rng = np.random.default_rng(7)
    tokens = rng.integers(1, source.vocab_size - 1, size=(len(PARITY_TEXTS), context_length), dtype=np.int64)

    with tempfile.TemporaryDirectory(prefix=f"{slug}-", dir=repository) as tmp:
        staging = Path(tmp)
        tokenizer_spec = None
        if source.write_tokenizer:
            tokenizer_spec = source.write_tokenizer(staging / f"{slug}.tokenizer.json")
            from imagesearch.tokenizer import Tokenizer

            tokens = Tokenizer(tokenizer_spec, staging / tokenizer_spec.file)(PARITY_TEXTS)
        with torch.no_grad():
            ref_image = visual(torch.from_numpy(images)).numpy()
            ref_text = textual(torch.from_numpy(tokens)).numpy()
        dim = int(ref_image.shape[-1])
        vectors_per_image = int(ref_image.shape[1]) if ref_image.ndim == 3 else 1

        paths = {t: version_dir(staging, slug, t) for t in TOWERS}
        _export_graph(visual, torch.from_numpy(images[:2]), "visual", paths["visual"] / VARIANT_FILES["fp32"])
        _export_graph(textual, torch.from_numpy(tokens[:2]), "textual", paths["textual"] / VARIANT_FILES["fp32"])
        for folder, reference in ((paths["visual"], ref_image), (paths["textual"], ref_text)):
            _gather_weights(folder / VARIANT_FILES["fp32"])
            _declare_output_shape(folder / VARIANT_FILES["fp32"], reference.shape[1:])
        parity = {
            "visual_fp32": check_parity(paths["visual"] / VARIANT_FILES["fp32"], ref_image, images, PARITY_MIN["fp32"], f"{slug} visual fp32"),
            "textual_fp32": check_parity(paths["textual"] / VARIANT_FILES["fp32"], ref_text, tokens, PARITY_MIN["fp32"], f"{slug} textual fp32"),
        }
        variants = ["fp32"]
        inputs = {"visual": images, "textual": tokens}
        refs = {"visual": ref_image, "textual": ref_text}
        for variant, enabled, writer, minimum in (
            ("fp16", options.fp16, _write_fp16, PARITY_MIN["fp16"]),
            ("int8", options.int8, _write_int8, PARITY_MIN["int8"]),
        ):
            if not enabled:
                continue
            for tower in TOWERS:
                out = paths[tower] / VARIANT_FILES[variant]
                writer(paths[tower] / VARIANT_FILES["fp32"], out)
                parity[f"{tower}_{variant}"] = check_parity(out, refs[tower], inputs[tower], minimum, f"{slug} {tower} {variant}")
            variants.append(variant)

        card = ModelCard(
            slug=slug, family=source.family, architecture=source.architecture, pretrained=options.pretrained,
            dim=dim, vectors_per_image=vectors_per_image, image_size=size, mean=source.mean, std=source.std,
            interpolation=source.interpolation, resize_mode=source.resize_mode, fill_color=source.fill_color,
            context_length=context_length,
            tokenizer=tokenizer_spec or TokenizerSpec(kind="clip_bpe", file="", context_length=context_length),
            variants=variants, **source.versions, parity=parity,
            int8_format=INT8_FORMAT if options.int8 else "", reference=f"{slug}.reference.npz",
        )
        # The parity batch and torch's outputs, so a service can check the file it loads (any CPU).
        arrays = {INPUTS["visual"][0]: images, INPUTS["textual"][0]: tokens, "visual": ref_image, "textual": ref_text}
        np.savez_compressed(staging / card.reference, **arrays)
        write_configs(card, staging, triton_options or TritonOptions(kind=triton_kind))

        for path in staging.rglob("*"):  # readable by the services' users (onnx writes weight files 0600)
            path.chmod(0o755 if path.is_dir() else 0o644)
        # Move into place only after every check passed: a failed export leaves the old model intact.
        for tower in TOWERS:
            dest = repository / model_name(slug, tower)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging / model_name(slug, tower), dest)
        if tokenizer_spec:
            os.replace(staging / tokenizer_spec.file, repository / tokenizer_spec.file)
        os.replace(staging / card.reference, repository / card.reference)
        card.save(repository)
    return card
