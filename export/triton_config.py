"""``config.pbtxt`` for the two towers, for Triton's ONNX Runtime backend.

The config is built as Triton's own ``ModelConfig`` protobuf (from ``tritonclient``) and written in
its text format, so a typo in a field name is an error here rather than a server that will not load.
Every value a user may tune is an ``imagesearch export`` flag (see ``TritonOptions``), so nobody
has to edit generated files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from imagesearch.model_card import INPUTS, OUTPUT, TOWERS, VARIANT_FILES, VARIANT_PARAMETER, ModelCard, Tower

TRITON_TYPES = {"uint8": mc.TYPE_UINT8, "int64": mc.TYPE_INT64, "float32": mc.TYPE_FP32}


@dataclass
class TritonOptions:
    kind: str = "KIND_GPU"  # KIND_GPU or KIND_CPU
    instances: int = 1
    visual_max_batch: int = 256
    textual_max_batch: int = 128
    queue_delay_us: int = 2000
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32, 64)  # sizes above max_batch_size are dropped
    warmup_batch_sizes: tuple[int, ...] = (1,)  # sizes above max_batch_size are dropped
    variant: str = "fp32"  # which exported file Triton loads (fp16 for GPUs)
    tensorrt_fp16: bool = False  # opt-in TensorRT execution accelerator for the ORT backend (GPU only)
    tensorrt_workspace_bytes: int = 1 << 30
    text_response_cache: bool = True  # needs `tritonserver --cache-config local,size=...`


def tower_spec(card: ModelCard, tower: Tower) -> tuple[str, int, list[int]]:
    """(input name, Triton data type, per-item dims) of a tower's input."""
    name, dtype = INPUTS[tower]
    dims = [card.image_size, card.image_size, 3] if tower == "visual" else [card.context_length]
    return name, TRITON_TYPES[dtype], dims


def build_config(card: ModelCard, tower: Tower, options: TritonOptions) -> mc.ModelConfig:
    input_name, data_type, dims = tower_spec(card, tower)
    max_batch = options.visual_max_batch if tower == "visual" else options.textual_max_batch
    if max_batch < 1:
        raise ValueError(f"max batch size of the {tower} model must be >= 1, got {max_batch}")
    if options.kind not in ("KIND_GPU", "KIND_CPU"):
        raise ValueError(f"instance kind must be KIND_GPU or KIND_CPU, got {options.kind!r}")
    config = mc.ModelConfig(
        name=card.model_name(tower),
        backend="onnxruntime",
        max_batch_size=max_batch,  # > 0: Triton adds the batch dimension in front of `dims`
        default_model_filename=VARIANT_FILES[options.variant],
        input=[mc.ModelInput(name=input_name, data_type=data_type, dims=dims)],
        output=[mc.ModelOutput(name=OUTPUT, data_type=TRITON_TYPES["float32"],
                               dims=list(card.image_shape()) if tower == "visual" else [card.dim])],
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=sorted({b for b in options.preferred_batch_sizes if 1 <= b <= max_batch}),
            max_queue_delay_microseconds=options.queue_delay_us,
        ),
        instance_group=[mc.ModelInstanceGroup(count=options.instances, kind=getattr(mc.ModelInstanceGroup, options.kind))],
    )
    # Which export this config serves, said outright for the services' reference check (the file
    # name says it too, but only to the ONNX Runtime backend; other backends need other names).
    config.parameters[VARIANT_PARAMETER].string_value = options.variant
    for batch in sorted({b for b in options.warmup_batch_sizes if 1 <= b <= max_batch}):
        config.model_warmup.append(mc.ModelWarmup(
            name=f"warmup_batch{batch}", batch_size=batch,
            inputs={input_name: mc.ModelWarmup.Input(data_type=data_type, dims=dims, zero_data=True)},
        ))
    if options.tensorrt_fp16 and options.kind == "KIND_GPU":
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP16"
        trt.parameters["max_workspace_size_bytes"] = str(options.tensorrt_workspace_bytes)
    if tower == "textual" and options.text_response_cache:
        config.response_cache.enable = True  # repeated queries are answered without running the model
    return config


def render_config(card: ModelCard, tower: Tower, options: TritonOptions) -> str:
    return text_format.MessageToString(build_config(card, tower, options))


def write_configs(card: ModelCard, repository: Path, options: TritonOptions) -> None:
    if options.variant not in card.variants:
        raise ValueError(f"Triton variant {options.variant} was not exported (have {card.variants})")
    for tower in TOWERS:
        folder = Path(repository) / card.model_name(tower)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(render_config(card, tower, options))
