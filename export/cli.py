"""`imagesearch export`: thin command-line shell over ``imagesearch.export.pipeline``.

Imports no torch until an export really runs, so ``--help`` and ``--if-missing`` (the compose
export job's check) stay quick."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from imagesearch.config import DEFAULT_MODEL, DEFAULT_PRETRAINED, get_settings
from imagesearch.export.source import ExportError, ExportOptions
from imagesearch.export.triton_config import TritonOptions
from imagesearch.model_card import FAMILIES, list_models, make_slug

BLIP2_DEFAULT = "Salesforce/blip2-itm-vit-g"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def configure(parser: argparse.ArgumentParser) -> None:
    # The --triton-* flags' defaults are TritonOptions' own.
    parser.add_argument("--family", choices=FAMILIES, default="open_clip",
                        help="open_clip (CLIP models), or blip2 (transformers' BLIP-2 retrieval model, e.g. "
                             "Salesforce/blip2-itm-vit-g: several vectors per image)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="open_clip architecture, e.g. ViT-B-32, ViT-L-14, ViT-B-16-SigLIP")
    parser.add_argument("--pretrained", default=None,
                        help=f"open_clip: a pretrained tag (default {DEFAULT_PRETRAINED}), a local checkpoint path, or 'none' "
                             "for random weights; blip2: a transformers model folder or hub name (default "
                             f"{BLIP2_DEFAULT}), or 'none' for random weights of --model-config's folder")
    parser.add_argument("--slug", default="", help="model slug (default: derived from model and pretrained)")
    parser.add_argument(
        "--model-config",
        type=Path,
        default=os.environ.get("IMAGESEARCH_ARCH_CONFIG") or None,
        help="open_clip: extra model config (JSON file or folder) for custom architectures (default: "
        "IMAGESEARCH_ARCH_CONFIG); blip2 with --pretrained none: a folder with config.json and the tokenizer",
    )
    parser.add_argument(
        "--text-model",
        type=lambda text: Path(text) if text else None,
        default=None,
        metavar="FOLDER",
        help="open_clip architectures whose text tower or tokenizer is a Hugging Face model (hf_model_name / "
        "hf_tokenizer_name in their config: xlm-roberta-base-ViT-B-32, nllb-clip-base, the SigLIPs): a local "
        "folder with that model's config.json and tokenizer files, read instead of the model hub (its "
        "weights are not needed: they come with --pretrained); empty: the hub",
    )
    parser.add_argument("--repository", type=Path, help="model repository (default: IMAGESEARCH_MODEL_REPOSITORY)")
    parser.add_argument("--fp16", action="store_true", help="also write a half-precision variant (GPUs)")
    parser.add_argument("--int8", action="store_true", help="also write a dynamically quantized int8 variant (CPUs)")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the model is already exported")
    triton = parser.add_argument_group("Triton config.pbtxt")
    triton.add_argument("--triton-kind", choices=["gpu", "cpu"], default=TritonOptions.kind.removeprefix("KIND_").lower(),
                        help="instance_group kind")
    triton.add_argument("--triton-instances", type=int, default=TritonOptions.instances)
    triton.add_argument("--triton-variant", choices=["fp32", "fp16", "int8"], default=TritonOptions.variant,
                        help="which exported file Triton loads")
    triton.add_argument("--triton-visual-max-batch", type=int, default=TritonOptions.visual_max_batch)
    triton.add_argument("--triton-textual-max-batch", type=int, default=TritonOptions.textual_max_batch)
    triton.add_argument("--triton-queue-delay-us", type=int, default=TritonOptions.queue_delay_us,
                        help="dynamic batcher: longest wait to fill a batch")
    triton.add_argument("--triton-preferred-batch", type=_sizes, default=TritonOptions.preferred_batch_sizes, metavar="N,N,...",
                        help="dynamic batcher's preferred batch sizes (default %(default)s)")
    triton.add_argument("--triton-warmup-batch", type=_sizes, default=TritonOptions.warmup_batch_sizes, metavar="N,N,...",
                        help="batch sizes Triton runs once at load time (default %(default)s)")
    triton.add_argument("--triton-tensorrt-fp16", action="store_true", help="enable the TensorRT FP16 accelerator (GPU)")
    triton.add_argument("--triton-tensorrt-workspace-bytes", type=int, default=TritonOptions.tensorrt_workspace_bytes)
    triton.add_argument("--no-triton-response-cache", action="store_true", help="disable the text model's response cache")


def triton_options(args: argparse.Namespace) -> TritonOptions:
    """The ``--triton-*`` flags as ``TritonOptions``."""
    return TritonOptions(
        kind=f"KIND_{args.triton_kind.upper()}", instances=args.triton_instances, variant=args.triton_variant,
        visual_max_batch=args.triton_visual_max_batch, textual_max_batch=args.triton_textual_max_batch,
        queue_delay_us=args.triton_queue_delay_us, preferred_batch_sizes=args.triton_preferred_batch,
        warmup_batch_sizes=args.triton_warmup_batch, tensorrt_fp16=args.triton_tensorrt_fp16,
        tensorrt_workspace_bytes=args.triton_tensorrt_workspace_bytes,
        text_response_cache=not args.no_triton_response_cache,
    )


def run(args: argparse.Namespace) -> int:
    repository = args.repository or get_settings().model_repository
    blip2 = args.family == "blip2"
    pretrained = args.pretrained or (BLIP2_DEFAULT if blip2 else DEFAULT_PRETRAINED)
    slug = args.slug or make_slug("blip2" if blip2 else args.model, pretrained)
    if args.if_missing and slug in list_models(repository):
        print(f"model {slug} is already in {repository}; nothing to do")
        return 0

    # Imported only now: the export loads torch, which the checks above do not need.
    from imagesearch.export.pipeline import export_model

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("imagesearch.export").setLevel(logging.INFO)  # the parity figures of each file
    options = ExportOptions(
        model=args.model, pretrained=pretrained, family=args.family, slug=slug, model_config=args.model_config,
        text_model=args.text_model, fp16=args.fp16, int8=args.int8,
    )
    try:
        card = export_model(options, repository, triton_options=triton_options(args))
    except ExportError as exc:
        print(f"export failed: {exc}")
        return 2
    worst = ", ".join(f"{k} {v:.6f}" for k, v in card.parity.items())
    vectors = f"dim {card.dim}" if card.vectors_per_image == 1 else f"{card.vectors_per_image} x {card.dim}-d vectors per image"
    print(f"exported {card.slug} ({card.architecture}, {vectors}, {card.image_size}px) to {repository}")
    print(f"parity vs {'transformers' if blip2 else 'open_clip'} (worst cosine): {worst}")
    return 0
