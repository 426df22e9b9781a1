"""A tower (torch module) -> its ONNX graph file: the export itself, where the weights are stored,
and the output shape the file declares.

Protobuf cannot hold a message over 2 GiB, so bigger graphs (BLIP-2's ViT-g: 1.2 billion weights)
keep their weights in one file beside the graph, ``<file>.data`` (ONNX Runtime and Triton read it
from there). Below ``EXTERNAL_DATA_BYTES`` everything stays in one file.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from imagesearch.model_card import INPUTS, OUTPUT

OPSET = 17
EXTERNAL_DATA_BYTES = 1 << 30


def export_graph(module: nn.Module, example: torch.Tensor, tower: str, path: Path) -> None:
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


def _external_files(model: onnx.ModelProto) -> set[str]:
    """The files beside the graph that hold its weights."""
    return {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}


def weight_bytes(path: Path) -> int:
    """The size of a graph's weights, wherever they are stored."""
    model = onnx.load(str(path), load_external_data=False)
    inline = sum(len(t.raw_data) for t in model.graph.initializer)
    return inline + sum((path.parent / name).stat().st_size for name in _external_files(model))


def is_large(path: Path) -> bool:
    """Whether a graph's weights belong in a file of their own (over ``EXTERNAL_DATA_BYTES``)."""
    return weight_bytes(path) > EXTERNAL_DATA_BYTES


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save a graph: in one file, or with its weights in ``<file>.data`` when they are large."""
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size > EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save(model, str(path))


def gather_weights(path: Path) -> None:
    """After torch's export: a graph over 2 GiB comes with one file per weight tensor beside it;
    gather them into ``<file>.data`` (and a graph over ``EXTERNAL_DATA_BYTES`` gets one too)."""
    scattered = _external_files(onnx.load(str(path), load_external_data=False))
    if not scattered and not is_large(path):
        return
    model = onnx.load(str(path))  # with the weights, wherever they are
    for name in scattered:
        (path.parent / name).unlink()
    save_onnx(model, path)


def declare_output_shape(path: Path, shape: tuple[int, ...]) -> None:
    """Write the output's per-item shape into the graph (the exporter can leave it symbolic, as for
    BLIP-2's [queries, dim]), so the file says what Triton's config declares. Weights stay where they are."""
    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, size in zip(list(dims)[1:], shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    onnx.save(model, str(path))
