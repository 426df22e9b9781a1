"""Triton: generated configs, and the Triton encoder against a real tritonserver (Python-backend twin)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from imagesearch.encoders import Encoder, EncoderUnavailable, make_encoder
from imagesearch.encoders.onnx import OnnxEncoder
from imagesearch.encoders.triton import TritonEncoder, served_variant
from imagesearch.export.triton_config import TritonOptions, write_configs
from imagesearch.model_card import OUTPUT, VARIANT_PARAMETER, load_card
from tests.support import shapes
from tests.support.test_model import pixels_for
from tests.support.triton_server import free_port

TEXTS = ["a red circle", "a photo of a blue square", "green triangle", "", "naïve café ☕ — 東京", "a very long caption " * 20]
ORT_TYPES = {"tensor(uint8)": mc.TYPE_UINT8, "tensor(int64)": mc.TYPE_INT64, "tensor(float)": mc.TYPE_FP32}


def _triton_settings(settings, server, **overrides):
    return settings.model_copy(update={"encoder": "triton", "triton_url": server.grpc_url, "triton_timeout_s": 10.0,
                                       "triton_retry_s": 3.0, "triton_startup_wait_s": 30.0, **overrides})


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- config.pbtxt --------------------------------------------------------------------------------


def _assert_valid_for_onnxruntime(config_path: Path) -> mc.ModelConfig:
    config = text_format.Parse(config_path.read_text(), mc.ModelConfig())  # unknown fields raise here
    assert config.name == config_path.parent.name
    assert config.backend == "onnxruntime" and not config.platform
    onnx_file = config_path.parent / "1" / config.default_model_filename
    assert onnx_file.is_file(), onnx_file
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    # Explicit inputs/outputs that match the ONNX graph; the batch dimension is Triton's (max_batch_size > 0).
    assert config.max_batch_size > 0
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, graph in zip(declared, actual, strict=True):
            assert tensor.data_type == ORT_TYPES[graph.type]
            assert isinstance(graph.shape[0], str), "the graph's batch dimension must be dynamic"
            assert list(tensor.dims) == list(graph.shape[1:])
    assert [t.name for t in config.output] == [OUTPUT]
    batching = config.dynamic_batching
    assert batching.max_queue_delay_microseconds > 0
    assert all(1 <= b <= config.max_batch_size for b in batching.preferred_batch_size)
    assert len(config.instance_group) == 1 and config.instance_group[0].count >= 1
    assert config.model_warmup, "warmup runs the model once at load time"
    for warmup in config.model_warmup:
        assert 1 <= warmup.batch_size <= config.max_batch_size
        assert set(warmup.inputs) == {t.name for t in config.input}
        for t in config.input:
            assert list(warmup.inputs[t.name].dims) == list(t.dims) and warmup.inputs[t.name].data_type == t.data_type
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if accelerators:
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert [a.name for a in accelerators] == ["tensorrt"]
        assert accelerators[0].parameters["precision_mode"] == "FP16"
        assert int(accelerators[0].parameters["max_workspace_size_bytes"]) > 0
    return config


def test_generated_configs_are_valid_for_onnxruntime_backend(test_model_repo_int8, tmp_path):
    test_model_repo = test_model_repo_int8  # the configs name the int8 file too
    card = load_card(test_model_repo, "shapes-tiny")
    # The repository the export wrote (KIND_CPU), and GPU variants written by the same code into copies.
    configs = {p.parent.name: _assert_valid_for_onnxruntime(p) for p in test_model_repo.glob("*/config.pbtxt")}
    assert set(configs) == {card.visual_name, card.textual_name}
    assert all(c.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU for c in configs.values())
    assert configs[card.textual_name].response_cache.enable and not configs[card.visual_name].response_cache.enable

    variants = {
        "gpu-trt": TritonOptions(kind="KIND_GPU", tensorrt_fp16=True, instances=2, warmup_batch_sizes=(1, 16)),
        "cpu-int8-nocache": TritonOptions(kind="KIND_CPU", variant="int8", text_response_cache=False,
                                          tensorrt_fp16=True, preferred_batch_sizes=(4, 1000), visual_max_batch=32),
    }
    for label, options in variants.items():
        repository = tmp_path / label
        for tower in ("visual", "textual"):  # configs sit beside the real ONNX files
            (repository / f"{card.slug}_{tower}").mkdir(parents=True)
            (repository / f"{card.slug}_{tower}" / "1").symlink_to(test_model_repo / f"{card.slug}_{tower}" / "1")
        write_configs(card, repository, options)
        parsed = {p.parent.name: _assert_valid_for_onnxruntime(p) for p in repository.glob("*/config.pbtxt")}
        visual, textual = parsed[card.visual_name], parsed[card.textual_name]
        kind = getattr(mc.ModelInstanceGroup, options.kind)
        assert visual.instance_group[0].kind == kind and visual.instance_group[0].count == options.instances
        assert visual.max_batch_size == options.visual_max_batch
        assert visual.default_model_filename == {"fp32": "model.onnx", "int8": "model.int8.onnx"}[options.variant]
        assert {visual.parameters[VARIANT_PARAMETER].string_value, textual.parameters[VARIANT_PARAMETER].string_value} \
            == {options.variant}
        assert [w.batch_size for w in visual.model_warmup] == list(options.warmup_batch_sizes)
        # TensorRT only where asked for and on GPU instances; response cache only for text.
        has_trt = bool(visual.optimization.execution_accelerators.gpu_execution_accelerator)
        assert has_trt == (options.tensorrt_fp16 and options.kind == "KIND_GPU")
        assert textual.response_cache.enable == options.text_response_cache
    assert list(parsed[card.visual_name].dynamic_batching.preferred_batch_size) == [4]  # 1000 > max batch dropped


def test_export_flags_set_every_tunable_value():
    import argparse

    from imagesearch.export import cli

    parser = argparse.ArgumentParser()
    cli.configure(parser)
    defaults = cli.triton_options(parser.parse_args([]))
    assert defaults == TritonOptions()
    options = cli.triton_options(parser.parse_args([
        "--triton-kind", "cpu", "--triton-instances", "3", "--triton-variant", "int8",
        "--triton-visual-max-batch", "48", "--triton-textual-max-batch", "24", "--triton-queue-delay-us", "500",
        "--triton-preferred-batch", "4,12", "--triton-warmup-batch", "1,8", "--triton-tensorrt-fp16",
        "--triton-tensorrt-workspace-bytes", "4096", "--no-triton-response-cache",
    ]))
    assert options == TritonOptions(kind="KIND_CPU", instances=3, variant="int8", visual_max_batch=48,
                                    textual_max_batch=24, queue_delay_us=500, preferred_batch_sizes=(4, 12),
                                    warmup_batch_sizes=(1, 8), tensorrt_fp16=True, tensorrt_workspace_bytes=4096,
                                    text_response_cache=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--triton-preferred-batch", "4,zero"])


# --- the encoder against a real tritonserver ------------------------------------------------------


@pytest.fixture()
def triton_encoder(triton_server, settings):
    encoder = make_encoder(_triton_settings(settings, triton_server))
    yield encoder
    encoder.close()


def test_triton_embeddings_equal_in_process_onnx(triton_encoder, settings):
    assert isinstance(triton_encoder, TritonEncoder) and isinstance(triton_encoder, Encoder)
    local = OnnxEncoder(triton_encoder.card, settings)
    pixels = pixels_for(shapes.dataset(n_per_class=3, seed=7))
    # More images than the client's batch size: several requests, reassembled in order.
    via_triton, in_process = (
        triton_encoder.encode_images(np.concatenate([pixels] * 2)),
        local.encode_images(np.concatenate([pixels] * 2)),
    )
    assert via_triton.shape == in_process.shape == (2 * len(pixels), triton_encoder.card.dim)
    assert via_triton.dtype == np.float32
    assert _cosines(via_triton, in_process).min() >= 0.99999
    texts_triton, texts_local = triton_encoder.encode_texts(TEXTS), local.encode_texts(TEXTS)
    assert _cosines(texts_triton, texts_local).min() >= 0.99999
    # The trained model still means something through Triton: "a red circle" is nearest to a red circle.
    red_circles = [
        i for i, img in enumerate(shapes.dataset(n_per_class=3, seed=7)) if (img.colour, img.shape) == ("red", "circle")
    ]
    assert int(np.argmax(via_triton[: len(pixels)] @ texts_triton[0])) in red_circles
    assert triton_encoder.encode_images(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, triton_encoder.card.dim)
    with pytest.raises(ValueError, match="expected uint8"):
        triton_encoder.encode_images(np.zeros((2, 16, 16, 3), np.uint8))
    assert triton_encoder.health()["ok"] is True


def test_concurrent_requests_are_batched_by_the_server(triton_encoder, triton_server):
    model = triton_encoder.card.visual_name
    pixels = pixels_for(shapes.dataset(n_per_class=4, seed=3))
    expected = triton_encoder.encode_images(pixels)

    def batched_executions() -> int:
        stats = triton_server.inference_stats(model)["batch_stats"]
        return sum(int(s["compute_infer"]["count"]) for s in stats if int(s["batch_size"]) > 1)

    before = batched_executions()
    with ThreadPoolExecutor(max_workers=16) as pool:  # one image per request, many in flight (thread-safe client)
        for _ in range(5):
            results = list(pool.map(lambda i: triton_encoder.encode_images(pixels[i : i + 1]), range(len(pixels))))
            assert _cosines(np.concatenate(results), expected).min() >= 0.99999
            if batched_executions() > before:
                break
    assert batched_executions() > before, "the dynamic batcher never merged concurrent requests"


def test_server_down_gives_clear_errors_and_the_same_client_recovers(triton_server, settings):
    encoder = TritonEncoder(
        load_card(settings.model_repository, settings.model), _triton_settings(settings, triton_server, triton_retry_s=2.0)
    )
    before = encoder.encode_texts(["a red circle"])
    try:
        triton_server.kill()
        with pytest.raises(EncoderUnavailable) as down:
            encoder.encode_texts(["a red circle"])
        assert triton_server.grpc_url in str(down.value) and encoder.card.textual_name in str(down.value)
        with pytest.raises(EncoderUnavailable, match=encoder.card.visual_name):
            encoder.encode_images(np.zeros((1, 32, 32, 3), np.uint8))
        health = encoder.health()
        assert health["ok"] is False and triton_server.grpc_url in health["error"]
    finally:
        triton_server.start()
    after = encoder.encode_texts(["a red circle"])  # same object, no restart of the caller
    assert _cosines(after, before).min() >= 0.99999
    assert encoder.health()["ok"] is True
    encoder.close()


def test_missing_model_and_absent_server_fail_clearly_at_startup(triton_server, settings):
    card = load_card(settings.model_repository, settings.model).model_copy(update={"slug": "never-exported"})
    with pytest.raises(EncoderUnavailable) as missing:
        TritonEncoder(card, _triton_settings(settings, triton_server, triton_startup_wait_s=0.0))
    assert "never-exported_visual" in str(missing.value) and triton_server.grpc_url in str(missing.value)

    nowhere = f"127.0.0.1:{free_port()}"
    with pytest.raises(EncoderUnavailable) as absent:
        make_encoder(settings.model_copy(update={"encoder": "triton", "triton_url": nowhere, "triton_startup_wait_s": 1.0}))
    assert nowhere in str(absent.value) and "shapes-tiny_visual" in str(absent.value)


def test_an_embedder_waits_for_and_checks_the_image_model_only(triton_server, settings):
    encoder = make_encoder(_triton_settings(settings, triton_server), towers=("visual",))
    assert list(encoder.models) == ["visual"] and set(encoder.reference_check["worst_cosine"]) == {"visual"}
    assert encoder.health()["models"] == ["shapes-tiny_visual"]
    with pytest.raises(ValueError, match="loaded without its textual tower"):
        encoder.encode_texts(["a red circle"])
    encoder.close()


def test_repeated_text_query_is_answered_from_the_response_cache(triton_encoder, triton_server):
    """The textual model's response cache (config.pbtxt + --cache-config) answers a repeated query
    without running the model: the server's own statistics count the hit and no new execution."""
    model = triton_encoder.card.textual_name
    text = f"a cached query {time.monotonic_ns()}"  # new to this server

    def stats() -> tuple[int, int]:
        inference = triton_server.inference_stats(model)["inference_stats"]
        return int(inference["cache_hit"]["count"]), int(inference["compute_infer"]["count"])

    first = triton_encoder.encode_texts([text])
    hits, computed = stats()
    again = triton_encoder.encode_texts([text])
    assert stats() == (hits + 1, computed)
    np.testing.assert_array_equal(again, first)


def test_the_served_variant_is_read_from_the_config():
    """The export's variant parameter decides (a backend other than ONNX Runtime, such as the test
    twin's Python backend, has no .onnx file name); a config written by hand names only the file."""
    twin_like = mc.ModelConfig(backend="python")
    twin_like.parameters[VARIANT_PARAMETER].string_value = "int8"
    assert served_variant(twin_like) == "int8"
    assert served_variant(mc.ModelConfig(default_model_filename="model.int8.onnx")) == "int8"
    assert served_variant(mc.ModelConfig()) == "fp32"


def test_blip2_is_served_by_a_real_tritonserver(blip2_repo, tmp_path):
    """BLIP-2's configs are valid for Triton's ONNX Runtime backend, and a real tritonserver serves its
    [queries, dim] image embeddings and its text embeddings as ONNX Runtime computes them in-process."""
    from imagesearch.config import Settings
    from tests.support.search_api import make_shapes
    from tests.support.triton_server import TritonServer
    from tests.support.triton_twin import make_python_twin

    card = load_card(blip2_repo, "blip2-tiny")
    configs = {p.parent.name: _assert_valid_for_onnxruntime(p) for p in blip2_repo.glob("*/config.pbtxt")}
    assert list(configs[card.visual_name].output[0].dims) == [4, 16]
    assert list(configs[card.textual_name].output[0].dims) == [16]
    server = TritonServer(make_python_twin(blip2_repo, tmp_path / "twin"), tmp_path).start()
    try:
        settings = Settings(model_repository=blip2_repo, model=card.slug, batch_size=8)
        triton = make_encoder(settings.model_copy(update={"encoder": "triton", "triton_url": server.grpc_url}))
        local = OnnxEncoder(card, settings)
        from imagesearch.preprocess import prepare

        pixels = np.stack([prepare(s.data, card) for s in make_shapes(2, seed=8)])  # more than one request
        via_triton, in_process = triton.encode_images(pixels), local.encode_images(pixels)
        assert via_triton.shape == in_process.shape == (len(pixels), 4, 16)
        np.testing.assert_allclose(via_triton, in_process, atol=1e-5)
        np.testing.assert_allclose(triton.encode_texts(TEXTS), local.encode_texts(TEXTS), atol=1e-5)
        assert triton.encode_images(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 4, 16)
        health = triton.health()
        assert health["ok"] is True and health["reference_check"]["checked"] is True, health
        triton.close()
    finally:
        server.stop()
