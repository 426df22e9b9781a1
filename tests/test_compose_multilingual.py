"""docker-compose.multilingual.yml: a second open_clip model (the multilingual xlm-roberta-base-ViT-B-32)
exported after the first and served beside it, read by Compose itself as tests/test_compose.py reads
the other files (schema, commands that parse with the real CLI, one slug everywhere)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from imagesearch.cli import build_parser
from imagesearch.model_card import make_slug
from tests.support import compose as c

OVERRIDE = c.REPO_ROOT / "docker-compose.multilingual.yml"
FILES = {"base+multilingual": [c.COMPOSE_FILE, OVERRIDE], "base+cpu+multilingual": [c.COMPOSE_FILE, c.CPU_OVERRIDE, OVERRIDE]}


def export_args(services: dict):
    argv = c.command_argv(services["export-multilingual"])
    return build_parser(argv[1:]).parse_args(argv[1:])


@pytest.mark.parametrize("files", list(FILES.values()), ids=list(FILES))
def test_the_override_validates_and_its_commands_parse(files):
    project = c.load_project(files)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(c.load_schema()).iter_errors(project)]
    assert errors == []
    for name, service in project["services"].items():
        if "build" in service:
            argv = c.command_argv(service)
            assert argv[0] == "imagesearch" and callable(build_parser(argv[1:]).parse_args(argv[1:])._run), name


def test_a_second_export_writes_the_multilingual_model_and_both_are_served():
    env = c.load_env()
    english = env["IMAGESEARCH_MODEL"]
    services = c.load_project(FILES["base+multilingual"])["services"]
    args = export_args(services)
    assert (args.family, args.model, args.pretrained, args.text_model) == (
        "open_clip",
        "xlm-roberta-base-ViT-B-32",
        "laion5b_s13b_b90k",
        None,
    )
    assert args.slug == make_slug(args.model, args.pretrained) and args.if_missing
    assert (args.triton_kind, args.triton_variant, args.fp16) == ("gpu", "fp16", True)
    assert services["export-multilingual"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert services["triton"]["depends_on"]["export-multilingual"]["condition"] == "service_completed_successfully"
    loaded = [a.split("=", 1)[1] for a in c.command_argv(services["triton"]) if a.startswith("--load-model=")]
    assert sorted(loaded) == sorted(f"{m}_{t}" for m in (english, args.slug) for t in ("visual", "textual"))
    base_triton = [
        a for a in c.command_argv(c.load_project([c.COMPOSE_FILE])["services"]["triton"]) if not a.startswith("--load-model=")
    ]
    assert [a for a in c.command_argv(services["triton"]) if not a.startswith("--load-model=")] == base_triton
    for name in ("embedder", "api"):
        assert c.environment(services[name])["IMAGESEARCH_MODELS"] == f"{english},{args.slug}", name
    assert c.mounts(services["export-multilingual"]) == c.mounts(services["export"])


def test_offline_and_cpu_settings_reach_the_export():
    changed = {**c.load_env(), "MULTILINGUAL_PRETRAINED": "/checkpoints/open_clip_pytorch_model.bin",
               "MULTILINGUAL_TEXT_MODEL": "/checkpoints/xlm-roberta-base", "MULTILINGUAL_VARIANT": "int8",
               "MULTILINGUAL_TRITON_KIND": "cpu", "MULTILINGUAL_MODEL": "clip-multi"}
    services = c.load_project(FILES["base+cpu+multilingual"], changed)["services"]
    args = export_args(services)
    assert (args.pretrained, args.text_model, args.slug) == ("/checkpoints/open_clip_pytorch_model.bin",
                                                             Path("/checkpoints/xlm-roberta-base"), "clip-multi")
    assert (args.triton_kind, args.triton_variant, args.int8) == ("cpu", "int8", True)
    assert "--load-model=clip-multi_textual" in c.command_argv(services["triton"])
