"""Triton Python-backend model that runs an exported ``model.onnx`` with ONNX Runtime.

Copied as ``1/model.py`` into the test twin of the model repository (see ``triton_server.py``):
the ``tritonserver`` from the ``nvidia-pytriton`` wheel has only the Python backend, so this stands
in for the ONNX Runtime backend and runs the *same* ONNX file. Like that backend, it runs all the
requests the dynamic batcher gathered as one ONNX Runtime call.

Tensors cross the backend boundary by DLPack: that backend's numpy path (``as_numpy()``,
``Tensor(name, array)``) was built for numpy 1 and returns empty outputs under numpy 2.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _quiet_consumed_capsules(unraisable, default=sys.unraisablehook):
    # The backend renames a DLPack capsule it consumed in a way numpy 2's capsule destructor does
    # not recognise; numpy then reports a harmless ValueError on every output. Keep the log readable.
    if isinstance(unraisable.exc_value, ValueError) and "PyCapsule" in str(unraisable.exc_value):
        return
    default(unraisable)


class TritonPythonModel:
    def initialize(self, args):
        sys.unraisablehook = _quiet_consumed_capsules
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # A plain session, as Triton's ONNX Runtime backend makes one (not the product's session code,
        # so that "Triton equals in-process" compares two independent paths).
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("onnx_threads", "1"))
        self.session = ort.InferenceSession(params["onnx_model"], options, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name)) for r in requests]
        out = self.session.run([self.output_name], {self.input_name: np.concatenate(arrays)})[0]
        bounds = np.cumsum([len(a) for a in arrays])[:-1]
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.output_name, np.ascontiguousarray(part))])
            for part in np.split(out, bounds)
        ]
