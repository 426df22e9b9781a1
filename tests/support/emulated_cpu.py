"""Run a Python module on an emulated AVX2-only CPU (``qemu-x86_64 -cpu Haswell``: AVX2 and FMA, no
AVX-512, no VNNI, no bf16), whatever CPU the suite runs on. ONNX Runtime and OpenVINO pick their
kernels from ``cpuid``, so this is what the same files do on such a machine; timings mean nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATED_CPU = "Haswell"


def run_module(module: str, *args: str, emulated: bool) -> dict:
    """``python -m MODULE ARGS`` (natively or emulated); its last line of output, parsed as JSON."""
    command = [sys.executable, "-m", module, *args]
    if emulated:
        qemu = shutil.which("qemu-x86_64")
        assert qemu, "qemu-x86_64 is missing: `apt-get install qemu-user` (make test installs it)"
        command = [qemu, "-cpu", EMULATED_CPU, *command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
