"""int8: one file that gives the same results on every CPU, and a load-time check for files that don't.

ONNX Runtime picks its integer kernels from ``cpuid`` at run time, so the same int8 file can be
accurate on the CPU that exported it and not on another. The emulated-CPU tests run the product's own
load-time check under ``qemu-x86_64 -cpu Haswell`` (AVX2 and FMA, no AVX-512, no VNNI), whatever CPU
the suite runs on. AVX-512 without VNNI cannot be emulated (QEMU's TCG has no AVX-512); the format's
reason for being portable (no 16-bit saturation) holds for it as for AVX2.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from imagesearch.config import Settings
from imagesearch.encoders import ReferenceCheckFailed, make_encoder
from imagesearch.model_card import INT8_FORMAT, PARITY_MIN, load_card
from tests.support import shapes
from tests.support.emulated_cpu import run_module

ROOT = Path(__file__).resolve().parents[1]


def _probe(*targets: str, emulated: bool) -> dict:
    """The load-time reference check of each ``repository:variant``, natively or on the emulated CPU."""
    return run_module("tests.support.encoder_probe", *targets, emulated=emulated)


def _signed_full_range_copy(repository: Path, destination: Path) -> Path:
    """The same model quantized the way this project did before (int8 weights, full range)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.copytree(repository, destination)
    for tower in ("visual", "textual"):
        folder = destination / f"shapes-tiny_{tower}" / "1"
        quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True)
    return destination


def test_int8_export_records_its_format_and_passes_its_gate(test_model_repo_int8):
    card = load_card(test_model_repo_int8, "shapes-tiny")
    assert card.variants == ["fp32", "int8"] and card.int8_format == INT8_FORMAT
    assert min(card.parity["visual_int8"], card.parity["textual_int8"]) >= PARITY_MIN["int8"]
    check = make_encoder(Settings(model_repository=test_model_repo_int8, model_variant="int8")).health()["reference_check"]
    assert check["checked"] and check["ok"] and check["minimum"] == PARITY_MIN["int8"]
    assert min(check["worst_cosine"].values()) >= PARITY_MIN["int8"]
    # what the format says: the matrix products are integer, the patch convolution stays fp32
    ops = {n.op_type for n in onnx.load(str(card.onnx_path(test_model_repo_int8, "visual", "int8"))).graph.node}
    assert "MatMulInteger" in ops and "Conv" in ops and "ConvInteger" not in ops, sorted(ops)


def test_int8_file_gives_the_same_results_on_an_emulated_avx2_only_cpu(test_model_repo_int8, tmp_path):
    """The exported file passes its gate on an AVX2-only CPU, with exactly the figures of this one;
    the old format (full-range int8 weights) fails there, so the test would catch a return to it.
    Its figure there is lower than on a CPU with AVX-512 VNNI (ONNX Runtime's AVX2 kernels saturate
    those weights), and the same when the machine running the suite is itself AVX2-only."""
    signed = _signed_full_range_copy(test_model_repo_int8, tmp_path / "signed")
    targets = (f"{test_model_repo_int8}:int8", f"{test_model_repo_int8}:fp32", f"{signed}:int8")
    native, emulated = _probe(*targets, emulated=False), _probe(*targets, emulated=True)

    assert emulated["cpu"] == {"AVX2": True, "AVX512F": False, "AVX512VNNI": False}
    portable, fp32, old = emulated["checks"]
    assert portable["ok"] and fp32["ok"], emulated
    for tower in ("visual", "textual"):  # no saturation anywhere: the same integers, the same floats
        assert portable["worst_cosine"][tower] == pytest.approx(native["checks"][0]["worst_cosine"][tower], abs=1e-6)
    assert not old["ok"], f"full-range int8 weights passed on the emulated AVX2 CPU: {old}"
    assert min(old["worst_cosine"].values()) <= min(native["checks"][2]["worst_cosine"].values())


def _break_weights(path: Path) -> None:
    """Reverse every quantized weight tensor: the file still loads and runs, its outputs are wrong."""
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype in (np.int8, np.uint8) and values.ndim == 2:
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values[::-1, ::-1]), tensor.name))
    onnx.save(model, str(path))


@pytest.fixture()
def broken_int8_repo(test_model_repo_int8, tmp_path) -> Path:
    repository = shutil.copytree(test_model_repo_int8, tmp_path / "repo")
    _break_weights(repository / "shapes-tiny_visual" / "1" / "model.int8.onnx")
    return repository


def test_a_broken_int8_file_is_refused_at_load_with_its_cosine(broken_int8_repo):
    settings = Settings(model_repository=broken_int8_repo, model_variant="int8")
    with pytest.raises(ReferenceCheckFailed, match=r"worst cosine visual -?0\.\d{5}, textual 0\.99\d{3}, below the gate 0\.995"):
        make_encoder(settings)
    # Told to serve it anyway, the encoder starts and its health carries the figure.
    check = make_encoder(settings.model_copy(update={"reference_check": "warn"})).health()["reference_check"]
    assert check["ok"] is False and check["worst_cosine"]["visual"] < PARITY_MIN["int8"] <= check["worst_cosine"]["textual"]


def test_a_refused_model_shows_in_healthz_and_status(broken_int8_repo, tmp_path):
    import httpx

    from imagesearch.api.app import create_app
    from tests.support.search_api import ApiThread

    settings = Settings(data_dir=tmp_path / "var", model_repository=broken_int8_repo, model="shapes-tiny",
                        model_variant="int8")
    with ApiThread(create_app(settings)) as thread:
        health = httpx.get(f"{thread.url}/healthz")
    assert health.status_code == 503
    assert "does not reproduce its export's reference outputs" in health.json()["encoder"]["error"]
    assert re.search(r"worst cosine visual -?0\.\d{5}", health.json()["encoder"]["error"])

    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "IMAGESEARCH_DATA_DIR": str(tmp_path / "var"),
           "IMAGESEARCH_MODEL_REPOSITORY": str(broken_int8_repo), "IMAGESEARCH_MODEL_VARIANT": "int8"}
    status = subprocess.run([sys.executable, "-m", "imagesearch.cli", "status"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    encoder_line = next(line for line in status.stdout.splitlines() if line.startswith("encoder:"))
    assert "DOWN" in encoder_line and re.search(r"worst cosine visual -?0\.\d{5}", encoder_line), encoder_line
    good = subprocess.run([sys.executable, "-m", "imagesearch.cli", "status"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "IMAGESEARCH_MODEL_VARIANT": "fp32"}, timeout=120)
    assert "encoder: ok (fp32; reference check passes: worst cosine visual 1.00000" in good.stdout, good.stdout

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "one.png").write_bytes(shapes.draw_shape("red", "circle", random.Random(0)).encode("PNG"))
    ingest = subprocess.run([sys.executable, "-m", "imagesearch.cli", "ingest", "--folder", str(tmp_path / "photos")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ingest.returncode == 1 and "does not reproduce its export's reference outputs" in ingest.stderr
    assert "Traceback" not in ingest.stderr, ingest.stderr


def test_an_export_without_its_reference_batch_is_refused_unless_told_to_warn(test_model_repo, tmp_path):
    """An incomplete export (its reference batch deleted or never written) cannot be checked on this
    machine: refused with what to do, or served unchecked with IMAGESEARCH_REFERENCE_CHECK=warn."""
    repository = shutil.copytree(test_model_repo, tmp_path / "repo")
    (repository / "shapes-tiny.reference.npz").unlink()
    with pytest.raises(
        ReferenceCheckFailed, match=r"shapes-tiny has no reference batch .*shapes-tiny\.reference\.npz.*Re-export"
    ):
        make_encoder(Settings(model_repository=repository))
    check = make_encoder(Settings(model_repository=repository, reference_check="warn")).health()["reference_check"]
    assert check["ok"] is False and check["checked"] is False and "IMAGESEARCH_REFERENCE_CHECK=warn" in check["detail"]
