"""Load exported models with the in-process encoders and print each one's health (with its load-time
reference check) and the CPU's features, as JSON.

The int8 and OpenVINO tests run this under an emulated CPU (tests/support/emulated_cpu.py): the
runtimes pick their kernels from ``cpuid``, so this is what the same files do on a machine with AVX2
and no AVX-512.

    python -m tests.support.encoder_probe REPOSITORY:VARIANT[:ENCODER] [...]   (ENCODER: onnx | openvino)
"""

from __future__ import annotations

import json
import sys

try:  # numpy 2; numpy 1.x keeps the same table under numpy.core
    from numpy._core._multiarray_umath import __cpu_features__
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__

from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.model_card import load_card


def main(targets: list[str]) -> None:
    encoders = []
    for target in targets:
        repository, variant, encoder = (target.split(":") + ["onnx"])[:3]
        settings = Settings(model_repository=repository, model_variant=variant, encoder=encoder, reference_check="warn")
        encoders.append(make_encoder(settings, load_card(repository)).health())
    cpu = {name: bool(__cpu_features__.get(name)) for name in ("AVX2", "AVX512F", "AVX512VNNI")}
    print(json.dumps({"cpu": cpu, "checks": [health["reference_check"] for health in encoders], "encoders": encoders}))


if __name__ == "__main__":
    main(sys.argv[1:])
