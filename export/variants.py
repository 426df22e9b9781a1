"""The optional variants of an exported fp32 graph: fp16 (GPUs) and int8 (CPUs). Each is checked
by the same parity gate as fp32, with its own minimum (``PARITY_MIN``)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from imagesearch.export.graph import is_large, save_onnx
from imagesearch.model_card import INT8_OPS


def write_fp16(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    # keep_io_types: uint8/int64 in, float32 out, as for fp32, so clients need not care.
    converted = convert_float_to_float16(model, keep_io_types=True)
    save_onnx(converted, dst)


def write_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization in the portable format (``INT8_FORMAT``): the same results on every CPU."""
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=list(INT8_OPS), use_external_data_format=is_large(src))


WRITERS = {"fp16": write_fp16, "int8": write_int8}  # variant -> writer(fp32 file, variant file)
