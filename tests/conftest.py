"""Shared fixtures. The trained test model is built once and cached (see tests/support/test_model.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagesearch.config import Settings

pytest_plugins = [
    "tests.support.triton_server",  # the `triton_server` fixture (a real tritonserver)
    "tests.support.es_node",  # the `es_node` fixture (a real Elasticsearch node)
    "tests.support.seaweedfs",  # the `s3_server` fixture (a real S3-compatible server, SeaweedFS)
    "tests.support.ray_cluster",  # the `ray_cluster` fixture (a real local Ray cluster: a head and two workers)
    "tests.support.browser",  # the `browser` and `page` fixtures (Debian's Chromium through Playwright)
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def test_model_repo() -> Path:
    """A model repository with the tiny coloured-shapes model (slug ``shapes-tiny``, fp32)."""
    from tests.support.test_model import ensure_test_model

    return ensure_test_model()


@pytest.fixture(scope="session")
def test_model_repo_int8(test_model_repo) -> Path:
    """The same model exported with its int8 variant too: only for the tests about int8, so that a
    failing int8 gate on some CPU is their failure alone."""
    from tests.support.test_model import ensure_test_model

    return ensure_test_model(int8=True)


@pytest.fixture(scope="session")
def blip2_repo() -> Path:
    """A model repository with a tiny random-weight BLIP-2 (slug ``blip2-tiny``, fp32 and int8),
    exported from its transformers model folder (``blip2_repo.parent / "blip2-tiny-hf"``); cached."""
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions
    from tests.support import tiny_blip2
    from tests.support.test_model import ensure_export

    def build(root: Path) -> None:
        folder = tiny_blip2.build(root / "blip2-tiny-hf")
        export_model(ExportOptions(family="blip2", pretrained=str(folder), slug="blip2-tiny", int8=True),
                     root / "models", triton_kind="KIND_CPU")

    return ensure_export("blip2-tiny", build, extra_sources=[Path(tiny_blip2.__file__)]) / "models"


@pytest.fixture(scope="session")
def vit_b32_repo() -> Path:
    """ViT-B-32 with random weights, exported with its fp16 and int8 variants (slug ``vit-b-32-random``),
    shared by the tests of the export and of preprocessing at 224 px; cached."""
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions
    from tests.support.test_model import ensure_export

    return ensure_export("vit-b-32-random", lambda folder: export_model(
        ExportOptions(model="ViT-B-32", pretrained="none", fp16=True, int8=True), folder))


@pytest.fixture()
def settings(tmp_path: Path, test_model_repo: Path) -> Settings:
    """Settings for the embedded default on a fresh data directory with the test model."""
    return Settings(data_dir=tmp_path / "var", model_repository=test_model_repo, model="shapes-tiny",
                    allow_private_networks=True)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture()
def image_server():
    """A real HTTP server on 127.0.0.1 serving what the test adds (tests/support/image_server.py)."""
    from tests.support.image_server import ImageServer

    with ImageServer() as server:
        yield server


# --- `make test-quick`: the tests that start no server process ----------------------------------------

# Tests that use these fixtures, live in these modules, or run with an "elasticsearch" or "s3" parameter
# (they ask for the server themselves) start a real server process (Elasticsearch, tritonserver, SeaweedFS,
# a Ray cluster, a Docker engine, the API and UI with a browser): marked `server`, left out of test-quick.
SERVER_FIXTURES = {"es_node", "secured_es_node", "triton_server", "blip2_repo", "s3_server", "ray_cluster"}
SERVER_MODULES = {"test_es_store", "test_es_cluster", "test_compose_docker", "test_compose_standin", "test_ui",
                  "test_ui_features", "test_make_run", "test_triton", "test_blip2"}
# Models at their real size, a second trained model, or an emulated CPU: marked `slow`, also left out.
SLOW_FIXTURES = {"vit_b32_repo", "multilingual_repo", "test_model_repo_int8"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        fixtures, name = set(getattr(item, "fixturenames", ())), item.nodeid.split("::")[-1]
        if module in SERVER_MODULES or SERVER_FIXTURES & fixtures or "elasticsearch" in name or "[s3]" in name:
            item.add_marker(pytest.mark.server)
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
