"""The Python-backend twin of a model repository: what the tests' tritonserver serves.

The ``tritonserver`` of the ``nvidia-pytriton`` wheel has only the Python backend, so each model
keeps the real ``config.pbtxt`` (names, dims, max_batch_size, dynamic batching, warmup, response
cache) with only the backend-specific lines changed, and its ``model.py`` (``triton_onnx_model.py``)
runs the **same** ``model.onnx`` with ONNX Runtime.

Used by the tests' server (``triton_server.py``) and inside the Triton image stand-in
(``tests/docker_standins/tritonserver``), so it needs only protobuf, tritonclient and the model card.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from imagesearch.model_card import MODEL_VERSION, VARIANT_FILES

PYTHON_MODEL = Path(__file__).with_name("triton_onnx_model.py")


def make_python_twin(real_repository: Path, twin: Path, onnx_threads: int = 1) -> Path:
    """Write a twin of ``real_repository`` whose models run their ONNX file in the Python backend."""
    twin.mkdir(parents=True, exist_ok=True)
    for config_path in sorted(Path(real_repository).glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
        onnx_file = config_path.parent / MODEL_VERSION / (config.default_model_filename or VARIANT_FILES["fp32"])
        # Only backend-specific lines change; names, dims, batching, warmup and cache stay.
        config.backend = "python"
        config.ClearField("platform")
        config.ClearField("default_model_filename")
        config.ClearField("optimization")  # GPU execution accelerators belong to the ORT backend
        for group in config.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
            group.ClearField("gpus")
        config.parameters["onnx_model"].string_value = str(onnx_file.resolve())
        config.parameters["onnx_threads"].string_value = str(onnx_threads)
        folder = twin / config_path.parent.name
        (folder / MODEL_VERSION).mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        shutil.copy2(PYTHON_MODEL, folder / MODEL_VERSION / "model.py")
    return twin
