"""Run the load-time reference check of exported models and print the result as JSON.

The int8 tests run this under an emulated CPU (``qemu-x86_64 -cpu Haswell``): ONNX Runtime picks its
kernels from ``cpuid``, so this is what the same files do on a machine with AVX2 and no AVX-512.

    python -m tests.support.int8_probe REPOSITORY:VARIANT [REPOSITORY:VARIANT ...]
"""

from __future__ import annotations

import json
import sys

try:  # numpy 2; numpy 1.x keeps the same table under numpy.core
    from numpy._core._multiarray_umath import __cpu_features__
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__

from imagesearch.config import Settings
from imagesearch.encoders.onnx import OnnxEncoder
from imagesearch.model_card import load_card


def main(targets: list[str]) -> None:
    checks = []
    for target in targets:
        repository, variant = target.rsplit(":", 1)
        settings = Settings(model_repository=repository, model_variant=variant, reference_check="warn")
        checks.append(OnnxEncoder(load_card(repository), settings).reference_check)
    cpu = {name: bool(__cpu_features__.get(name)) for name in ("AVX2", "AVX512F", "AVX512VNNI")}
    print(json.dumps({"cpu": cpu, "checks": checks}))


if __name__ == "__main__":
    main(sys.argv[1:])
