"""``config.pbtxt`` for the two towers, for Triton's ONNX Runtime backend.

Every value a user may tune is an ``imagesearch export`` flag (see ``TritonOptions``), so nobody
has to edit generated files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagesearch.model_card import VARIANT_FILES, ModelCard


@dataclass
class TritonOptions:
    kind: str = "KIND_GPU"  # KIND_GPU or KIND_CPU
    instances: int = 1
    visual_max_batch: int = 256
    textual_max_batch: int = 128
    queue_delay_us: int = 2000
    variant: str = "fp32"  # which exported file Triton loads (fp16 for GPUs)
    tensorrt_fp16: bool = False  # opt-in TensorRT execution accelerator for the ORT backend (GPU only)
    text_response_cache: bool = True


def _warmup(input_name: str, data_type: str, dims: list[int], batch: int) -> str:
    return (
        "model_warmup [\n"
        f'  {{\n    name: "warmup_batch{batch}"\n    batch_size: {batch}\n'
        f'    inputs {{\n      key: "{input_name}"\n      value {{\n        data_type: {data_type}\n'
        f"        dims: [ {', '.join(map(str, dims))} ]\n        zero_data: true\n      }}\n    }}\n  }}\n]\n"
    )


def render_config(card: ModelCard, tower: str, options: TritonOptions) -> str:
    if tower == "visual":
        name, input_name, data_type = card.visual_name, "pixels", "TYPE_UINT8"
        dims, max_batch = [card.image_size, card.image_size, 3], options.visual_max_batch
    else:
        name, input_name, data_type = card.textual_name, "tokens", "TYPE_INT64"
        dims, max_batch = [card.context_length], options.textual_max_batch
    preferred = [b for b in (8, 16, 32, 64) if b <= max_batch]
    dims_text = ", ".join(map(str, dims))
    text = (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch}\n"
        f'default_model_filename: "{VARIANT_FILES[options.variant]}"\n'
        f'input [\n  {{\n    name: "{input_name}"\n    data_type: {data_type}\n    dims: [ {dims_text} ]\n  }}\n]\n'
        f'output [\n  {{\n    name: "embedding"\n    data_type: TYPE_FP32\n    dims: [ {card.dim} ]\n  }}\n]\n'
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {options.queue_delay_us}\n"
        "}\n"
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {options.kind}\n  }}\n]\n"
    )
    text += _warmup(input_name, data_type, dims, 1)
    if options.tensorrt_fp16 and options.kind == "KIND_GPU":
        text += (
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [\n      {\n"
            '        name : "tensorrt"\n'
            '        parameters { key: "precision_mode" value: "FP16" }\n'
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
            "      }\n    ]\n  }\n}\n"
        )
    if tower == "textual" and options.text_response_cache:
        text += "response_cache {\n  enable: true\n}\n"
    return text


def write_configs(card: ModelCard, repository: Path, options: TritonOptions) -> None:
    if options.variant not in card.variants:
        raise ValueError(f"Triton variant {options.variant} was not exported (have {card.variants})")
    for tower in ("visual", "textual"):
        folder = Path(repository) / f"{card.slug}_{tower}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(render_config(card, tower, options))
