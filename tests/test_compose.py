"""The docker compose deployment, checked without a Docker engine: Compose's own `config` reads the
files (tests/support/compose.py).

The compose files (and their merge with the CPU override) must validate against the Compose
Specification's JSON schema, and agree with the code: commands parse with the real `imagesearch`
parser, IMAGESEARCH_* variables are settings the services read, ports and addresses match the
settings' defaults, images are pinned (Elasticsearch to the version the tests run). The stand-in
run of the same services as local processes is tests/test_compose_standin.py.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import jsonschema
import pytest

from imagesearch.cli import build_parser
from imagesearch.config import Settings
from tests.support import compose as c

BASE = [c.COMPOSE_FILE]
CPU = [c.COMPOSE_FILE, c.CPU_OVERRIDE]
BLIP2 = [c.COMPOSE_FILE, c.BLIP2_OVERRIDE]
CPU_BLIP2 = [c.COMPOSE_FILE, c.CPU_OVERRIDE, c.BLIP2_OVERRIDE]
MULTILINGUAL = [c.COMPOSE_FILE, c.MULTILINGUAL_OVERRIDE]
CPU_MULTILINGUAL = [c.COMPOSE_FILE, c.CPU_OVERRIDE, c.MULTILINGUAL_OVERRIDE]
RAY = [c.COMPOSE_FILE, c.RAY_OVERRIDE]
CPU_RAY = [c.COMPOSE_FILE, c.CPU_OVERRIDE, c.RAY_OVERRIDE]
ALL = pytest.mark.parametrize("files", [BASE, CPU, BLIP2, CPU_BLIP2, MULTILINGUAL, CPU_MULTILINGUAL, RAY, CPU_RAY],
                              ids=["base", "base+cpu", "base+blip2", "base+cpu+blip2", "base+multilingual",
                                   "base+cpu+multilingual", "base+ray", "base+cpu+ray"])
DOCKERFILES = [c.REPO_ROOT / "docker" / "Dockerfile", c.REPO_ROOT / "docker" / "Dockerfile.export"]
# What each of our commands needs set (beyond defaults) to run in the distributed mode.
NEEDED = {
    ("ingest", "download"): {"store", "es_url", "es_password", "es_ca_certs", "model", "model_repository", "data_dir"},
    ("ingest", "embed"): {"store", "es_url", "es_password", "es_ca_certs", "model", "model_repository", "data_dir",
                          "encoder", "triton_url"},
    ("ingest", "--urls"): {"store", "es_url", "es_password", "es_ca_certs", "model", "model_repository", "data_dir",
                           "encoder", "triton_url"},  # both stages: a Ray job's (docker-compose.ray.yml)
    ("serve",): {"store", "es_url", "es_password", "es_ca_certs", "model", "model_repository", "data_dir",
                 "encoder", "triton_url", "api_host"},
    ("ui",): {"api_url", "ui_host"},
    ("export",): {"model_repository"},
}
LONG_RUNNING = {"es", "triton", "embedder", "api", "ui"}
ONE_SHOT = {"es-certs", "export", "downloader"}
PINNED_TAG = re.compile(r"^[\w.\-/]+(:\d+(\.\d+)+[\w.\-]*)(@sha256:[0-9a-f]{64})?$")


def default(field: str):
    return Settings.model_fields[field].default


def ours(services: dict) -> dict[str, dict]:
    """Services that run our image (built from this checkout)."""
    return {name: s for name, s in services.items() if "build" in s}


def imagesearch_argv(service: dict) -> list[str] | None:
    """The `imagesearch` command a service runs: its command, or the entrypoint of the Ray job it
    submits (`ray job submit ... -- imagesearch ...`); None for a Ray node (`ray start`)."""
    argv = c.command_argv(service)
    if argv[:3] == ["ray", "job", "submit"]:
        return argv[argv.index("--") + 1:]
    return None if argv[:2] == ["ray", "start"] else argv


def runs_the_job(name: str, services: dict) -> bool:
    """The Ray head runs the driver of the job the downloader submits, with its own settings."""
    return name == "ray-head" and any(c.command_argv(s)[:3] == ["ray", "job", "submit"] for s in services.values())


# -- the Compose Specification ---------------------------------------------------------------------

@ALL
def test_compose_files_validate_against_the_compose_spec_schema(files):
    """Compose checks each file against its own copy of the schema; the merged result must also
    pass the Compose Specification's schema kept in shared/."""
    validator = jsonschema.Draft7Validator(c.load_schema())
    project = c.load_project(files)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(project)]
    assert errors == []
    assert project["services"], "no services"


def test_a_broken_file_is_refused(tmp_path):
    """Neither check above is vacuous: a typo'd key and a bad depends_on condition fail both."""
    project = c.load_project(BASE)
    project["services"]["api"]["healthchek"] = project["services"]["api"].pop("healthcheck")
    project["services"]["ui"]["depends_on"]["api"]["condition"] = "service_ready"
    messages = [e.message for e in jsonschema.Draft7Validator(c.load_schema()).iter_errors(project)]
    assert any("healthchek" in m for m in messages) and any("service_ready" in m for m in messages)
    broken = tmp_path / "broken.yml"
    broken.write_text(c.CPU_OVERRIDE.read_text().replace("\n  triton:\n", "\n  triton:\n    healthchek: {}\n", 1))
    with pytest.raises(c.ComposeError, match="healthchek"):
        c.load_project([c.COMPOSE_FILE, broken])


def test_the_services_the_deployment_needs_are_there():
    assert set(c.load_project(BASE)["services"]) == LONG_RUNNING | ONE_SHOT


# -- .env ---------------------------------------------------------------------------------------------

def test_env_example_documents_every_variable_and_matches_the_defaults():
    env = c.load_env()
    # the CPU override resets the GPU's variables away; those of BLIP-2, the multilingual model and Ray
    # are used with their overrides only
    used = {**c.variables(BASE), **c.variables(CPU), **c.variables(BLIP2), **c.variables(MULTILINGUAL), **c.variables(RAY)}
    assert sorted(set(used) - set(env)) == [], "variables missing from .env.example"
    assert sorted(set(env) - set(used)) == [], ".env.example documents variables nothing uses"
    for name, variable in used.items():
        if variable["Required"]:
            assert env[name], f"{name} is required but empty in .env.example"
        else:
            default = variable["DefaultValue"]
            assert env[name] == default, f"{name}: .env.example says {env[name]!r}, the compose default is {default!r}"
    text = c.ENV_EXAMPLE.read_text()
    for name in env:  # each variable (or group of variables) is explained by a comment above it
        above = [line for line in text[: text.index(f"\n{name}=")].splitlines() if not re.match(r"\w+=", line)]
        assert above[-1].startswith("# "), f"{name} has no comment in .env.example"


def test_a_missing_password_stops_compose():
    env = c.load_env()
    env["ELASTIC_PASSWORD"] = ""
    with pytest.raises(c.ComposeError, match="required variable ELASTIC_PASSWORD"):
        c.load_project(BASE, env)


def test_env_file_is_neither_committed_nor_sent_to_docker():
    for ignore_file in (".gitignore", ".dockerignore"):
        lines = {line.strip() for line in (c.REPO_ROOT / ignore_file).read_text().splitlines()}
        assert {".env", "/.env"} & lines, f".env is not in {ignore_file}"
    # Secrets come from .env: every password and key in the raw compose file is a ${VARIABLE} (or a
    # comma-separated list of them), required or empty by default, never a value written here.
    variable = r"\$\{\w+(:\?[^}]*|:-)?\}"
    for service in c.load_yaml(c.COMPOSE_FILE)["services"].values():
        for key, value in c.environment(service).items():
            if "PASSWORD" in key or "API_KEY" in key:
                assert re.fullmatch(rf"{variable}(,{variable})*", value), f"{key} is not taken from .env"


# -- commands, settings, ports ----------------------------------------------------------------------

@ALL
def test_every_service_command_is_a_real_imagesearch_command(files):
    for name, service in ours(c.load_project(files)["services"]).items():
        argv = imagesearch_argv(service)
        if argv is None:  # a Ray node: test_the_ray_override_runs_the_ingest_as_a_job_on_its_nodes
            continue
        assert argv[0] == "imagesearch", f"{name}: {argv}"
        try:
            args = build_parser(argv[1:]).parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"{name}: `{' '.join(argv)}` does not parse with the imagesearch CLI (exit {exc.code})")
        assert callable(args._run), name


def test_the_export_job_matches_gpu_or_cpu():
    for files, kind, variant in ((BASE, "gpu", "fp16"), (CPU, "cpu", "int8")):
        project = c.load_project(files)
        argv = c.command_argv(project["services"]["export"])
        args = build_parser(argv[1:]).parse_args(argv[1:])
        assert args.if_missing, "the export job must leave an existing model alone"
        assert (args.triton_kind, args.triton_variant, getattr(args, variant)) == (kind, variant, True)
        devices = project["services"]["triton"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if kind == "gpu":
            assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
        else:
            assert devices == []


def test_one_model_slug_everywhere():
    """Export writes the slug the services read and the two Triton models Triton loads."""
    project = c.load_project(BASE)
    services = project["services"]
    export_args = build_parser(c.command_argv(services["export"])[1:]).parse_args(c.command_argv(services["export"])[1:])
    slug = export_args.slug
    assert slug == c.load_env()["IMAGESEARCH_MODEL"]
    loaded = [a.split("=", 1)[1] for a in c.command_argv(services["triton"]) if a.startswith("--load-model=")]
    assert sorted(loaded) == [f"{slug}_textual", f"{slug}_visual"]
    for name, service in ours(project["services"]).items():
        model = c.environment(service).get("IMAGESEARCH_MODEL")
        assert model in (None, slug), name


def test_blip2_override_exports_and_serves_both_models():
    """With docker-compose.blip2.yml: a second export job writes BLIP-2 after the first, Triton loads
    both models' towers, and the embedder and the API embed with and serve both, CLIP first."""
    env = c.load_env()
    clip, blip2 = env["IMAGESEARCH_MODEL"], env["BLIP2_MODEL"]
    for files, kind, variant in ((BLIP2, "gpu", "fp16"), (CPU_BLIP2, "cpu", "int8")):
        changed = {**env, **({"BLIP2_TRITON_KIND": "cpu", "BLIP2_VARIANT": "int8"} if kind == "cpu" else {})}
        services = c.load_project(files, changed)["services"]
        argv = c.command_argv(services["export-blip2"])
        args = build_parser(argv[1:]).parse_args(argv[1:])
        assert (args.family, args.slug, args.pretrained, args.if_missing) == ("blip2", blip2, env["BLIP2_PRETRAINED"], True)
        assert (args.triton_kind, args.triton_variant, getattr(args, variant)) == (kind, variant, True)
        assert services["export-blip2"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
        assert services["triton"]["depends_on"]["export-blip2"]["condition"] == "service_completed_successfully"
        loaded = [a.split("=", 1)[1] for a in c.command_argv(services["triton"]) if a.startswith("--load-model=")]
        assert sorted(loaded) == sorted(f"{m}_{t}" for m in (clip, blip2) for t in ("visual", "textual"))
        base_triton = [a for a in c.command_argv(c.load_project(BASE)["services"]["triton"]) if not a.startswith("--load-model=")]
        assert [a for a in c.command_argv(services["triton"]) if not a.startswith("--load-model=")] == base_triton
        for name in ("embedder", "api"):
            assert c.environment(services[name])["IMAGESEARCH_MODELS"] == f"{clip},{blip2}", name
        assert {"volumes": services["export-blip2"]["volumes"]} == {"volumes": services["export"]["volumes"]}


@ALL
def test_every_imagesearch_variable_is_a_setting_and_the_needed_ones_are_set(files, monkeypatch):
    services = c.load_project(files)["services"]
    for name, service in services.items():
        env = {k: v for k, v in c.environment(service).items() if k.startswith("IMAGESEARCH_")}
        unknown = [k for k in env if k.removeprefix("IMAGESEARCH_").lower() not in Settings.model_fields]
        assert unknown == [], f"{name} sets variables no setting reads: {unknown}"
        if "build" not in service:
            assert env == {}, f"{name} is not ours but sets {sorted(env)}"
            continue
        argv = (imagesearch_argv(services["downloader"]) if runs_the_job(name, services) else imagesearch_argv(service))
        if argv is None:  # a Ray worker: it runs what the driver sends, with the driver's settings
            continue
        needed = next(v for k, v in NEEDED.items() if tuple(argv[1: len(k) + 1]) == k)
        required = {f for f, info in Settings.model_fields.items() if info.is_required()}
        fields = {k.removeprefix("IMAGESEARCH_").lower() for k in env}
        assert (needed | required) - fields == set(), f"{name} misses settings"
        # The values are valid for the settings class, read from the environment as in the container.
        for key in [k for k in os.environ if k.startswith("IMAGESEARCH_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        if "store" in fields:
            assert settings.store == "elasticsearch" and settings.es_password.get_secret_value()
        if "encoder" in fields:
            assert settings.encoder == "triton"


def test_ports_and_addresses_match_the_settings():
    services = c.load_project(BASE)["services"]
    container = {name: [p[2] for p in c.published_ports(s)] for name, s in services.items()}
    es_host, es_port = c.host_port(default("es_url"), 9200)
    triton_host, triton_port = c.host_port(default("triton_url"), 8001)
    api_host, api_port = c.host_port(default("api_url"), 8000)
    assert (es_port, triton_port, api_port) == (9200, 8001, default("api_port"))
    assert es_port in container["es"] and triton_port in container["triton"]
    assert container["api"] == [default("api_port")] and container["ui"] == [default("ui_port")]
    # Elasticsearch and Triton are published on the loopback interface only.
    for name in ("es", "triton"):
        assert {p[0] for p in c.published_ports(services[name])} == {"127.0.0.1"}, name
    # Service addresses point at the compose services on the right ports.
    for name, service in ours(services).items():
        env = c.environment(service)
        for key, target, port in (("IMAGESEARCH_ES_URL", "es", es_port), ("IMAGESEARCH_TRITON_URL", "triton", triton_port),
                                  ("IMAGESEARCH_API_URL", "api", api_port)):
            if key in env:
                assert c.host_port(env[key], port) == (target, port), f"{name}: {key}={env[key]}"
    # Healthchecks probe the ports the services listen on.
    assert f":{default('api_port')}/healthz" in " ".join(c.healthcheck_argv(services["api"]))
    assert f":{default('ui_port')}/" in " ".join(c.healthcheck_argv(services["ui"]))
    assert ":8000/v2/health/ready" in " ".join(c.healthcheck_argv(services["triton"]))  # Triton's HTTP port


def test_volumes_connect_the_services():
    services = c.load_project(BASE)["services"]
    volumes = {name: {src: (target, ro) for src, target, ro in c.mounts(s)} for name, s in services.items()}
    assert volumes["es"]["es-data"] == ("/usr/share/elasticsearch/data", False)
    assert volumes["export"]["model-repository"] == ("/models", False)
    assert volumes["triton"]["model-repository"] == ("/models", True)
    for name, service in ours(services).items():
        env = c.environment(service)
        if "IMAGESEARCH_DATA_DIR" in env:  # the images volume is the images folder of the settings
            images_dir = str(Path(env["IMAGESEARCH_DATA_DIR"]) / "images")
            writers = ("downloader", "api")  # the api deletes the files of removed images
            assert volumes[name]["images"] == (images_dir, name not in writers), name
        if "IMAGESEARCH_MODEL_REPOSITORY" in env:
            assert volumes[name]["model-repository"][0] == env["IMAGESEARCH_MODEL_REPOSITORY"], name
        if "IMAGESEARCH_ES_CA_CERTS" in env:
            target, _ = volumes[name]["es-certs"]
            assert env["IMAGESEARCH_ES_CA_CERTS"].startswith(target + "/"), name
    # The downloader reads the URL list from the mounted data/ folder.
    urls = c.command_argv(services["downloader"])
    urls_path = urls[urls.index("--urls") + 1]
    assert any(src == "./data" and urls_path.startswith(t + "/") for src, (t, _) in volumes["downloader"].items())
    assert (c.REPO_ROOT / "data").is_dir()
    declared = set(c.load_project(BASE)["volumes"])
    assert {"es-data", "images"} <= declared
    named = {src for v in volumes.values() for src in v if not src.startswith((".", "/"))}
    assert named == declared


def test_start_order_and_restart_policies():
    services = c.load_project(BASE)["services"]
    expected = {
        "es": {"es-certs": "service_completed_successfully"},
        "triton": {"export": "service_completed_successfully"},
        "downloader": {"es": "service_healthy", "export": "service_completed_successfully"},
        "embedder": {"es": "service_healthy", "triton": "service_healthy"},
        "api": {"es": "service_healthy", "triton": "service_healthy"},
        "ui": {"api": "service_healthy"},
    }
    for name, service in services.items():
        conditions = {dep: spec["condition"] for dep, spec in (service.get("depends_on") or {}).items()}
        assert conditions == expected.get(name, {}), name
        for dep, condition in conditions.items():
            if condition == "service_healthy":
                assert c.healthcheck_argv(services[dep]), f"{name} waits for {dep}'s health, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert dep in ONE_SHOT, dep
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name
    for name in ONE_SHOT:
        assert services[name]["restart"] in ("no", "on-failure:3"), name
    for name in LONG_RUNNING - {"embedder"}:  # the embedder has no port to probe
        assert c.healthcheck_argv(services[name]), name
    assert services["es"]["deploy"]["resources"]["limits"]["memory"]


# -- images -------------------------------------------------------------------------------------------

def es_test_version() -> str:
    """The Elasticsearch version the tests run (tests/support/es_node.py)."""
    text = (c.REPO_ROOT / "tests" / "support" / "es_node.py").read_text()
    versions = set(re.findall(r"""^\s*\w*VERSION\w*\s*(?::\s*\w+\s*)?=\s*["'](\d+\.\d+\.\d+)["']""", text, re.M))
    assert len(versions) == 1, f"expected one pinned version in es_node.py, found {versions}"
    return versions.pop()


def test_images_are_pinned_and_elasticsearch_is_the_tested_version():
    services = c.load_project(BASE)["services"]
    for name, service in services.items():
        if "build" not in service:
            assert PINNED_TAG.match(service["image"]), f"{name}: {service['image']} is not pinned"
    assert services["es"]["image"] == f"docker.elastic.co/elasticsearch/elasticsearch:{es_test_version()}"
    assert services["es-certs"]["image"] == services["es"]["image"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", services["triton"]["image"])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pin_the_base_run_as_non_root_and_install_dependencies_first(dockerfile):
    instructions = [line.strip() for line in dockerfile.read_text().replace("\\\n", " ").splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    bases = [i.split()[1] for i in instructions if i.upper().startswith("FROM ")]
    assert bases and all(PINNED_TAG.match(b) for b in bases), bases
    users = [i.split()[1] for i in instructions if i.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    copies = [n for n, i in enumerate(instructions) if i.upper().startswith("COPY ")]
    dependency_install = next(n for n, i in enumerate(instructions) if "pip install -r" in i)
    before = [instructions[n].split()[1:-1] for n in copies if n < dependency_install]
    assert before == [["pyproject.toml"]], "only pyproject.toml may be copied before the dependencies are installed"
    assert any("pip install --no-deps ." in i for i in instructions[dependency_install + 1:])


def test_the_runtime_image_has_no_torch_and_all_it_runs():
    text = DOCKERFILES[0].read_text()
    assert "torch" not in text.replace("No torch", "").replace("needs torch", "")
    assert "optional-dependencies" not in text
    copied = set(re.findall(r"^COPY (\w+) \./", text, re.M))
    assert copied == {"imagesearch", "ingest", "api", "ui"}
    # export/ is left out, so nothing the runtime image runs may import it.
    for package in copied:
        for path in (c.REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                assert not [n for n in names if n == "imagesearch.export" or n.startswith("imagesearch.export.")], \
                    f"{path} imports imagesearch.export"
    ignored = set((c.REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", "model_repository", "test-artifacts"} <= ignored


def test_the_env_files_empty_arch_config_means_none(monkeypatch):
    """`.env.example` leaves IMAGESEARCH_ARCH_CONFIG empty: no custom architecture, not the current folder."""
    assert c.load_env()["IMAGESEARCH_ARCH_CONFIG"] == ""
    monkeypatch.setenv("IMAGESEARCH_ARCH_CONFIG", "")
    assert Settings().arch_config is None


# -- the Ray override ---------------------------------------------------------------------------------

def test_the_ray_override_runs_the_ingest_as_a_job_on_its_nodes():
    """docker-compose.ray.yml: a head and workers of the Ray image (the runtime image and the ray
    extra), the downloader submitting `imagesearch ingest --urls ... --ray auto` to the head as a Ray
    job, every node mounting what the driver's settings point at, and no embedder racing the cluster."""
    services = c.load_project(RAY)["services"]
    assert "embedder" not in services and {"ray-head", "ray-worker"} <= set(services)
    head, worker, downloader = services["ray-head"], services["ray-worker"], services["downloader"]
    head_argv, worker_argv = c.command_argv(head), c.command_argv(worker)
    port = next(a.split("=", 1)[1] for a in head_argv if a.startswith("--port="))
    assert head_argv[:3] == ["ray", "start", "--head"] and "--block" in head_argv
    assert worker_argv[:2] == ["ray", "start"] and f"--address=ray-head:{port}" in worker_argv and "--block" in worker_argv
    submit = c.command_argv(downloader)
    assert submit[:3] == ["ray", "job", "submit"] and "--address=http://ray-head:8265" in submit
    job = build_parser(imagesearch_argv(downloader)[1:]).parse_args(imagesearch_argv(downloader)[1:])
    assert job.ray == "auto" and job.urls == Path("/input/image_urls.txt")  # the driver runs on the head, a node
    for name in ("ray-head", "ray-worker", "downloader"):
        assert services[name]["image"] == "imagesearch-ray" and services[name]["build"]["dockerfile"] == "docker/Dockerfile.ray"
        assert services[name]["build"]["additional_contexts"] == {"imagesearch-runtime": "service:api"}
    assert any(s["image"] == "imagesearch-runtime" and "build" in s for s in services.values())
    dockerfile = (c.REPO_ROOT / "docker" / "Dockerfile.ray").read_text()
    assert "FROM imagesearch-runtime" in dockerfile and "['optional-dependencies']['ray']" in dockerfile
    assert re.search(r"^ray = \[", (c.REPO_ROOT / "pyproject.toml").read_text(), re.M), "no ray extra in pyproject.toml"
    head_env = c.environment(head)
    images_dir = str(Path(head_env["IMAGESEARCH_DATA_DIR"]) / "images")
    for name in ("ray-head", "ray-worker"):  # the nodes see the images volume where the driver's settings put it
        mounts = {src: target for src, target, _ in c.mounts(services[name])}
        assert mounts["images"] == images_dir and mounts["model-repository"] == head_env["IMAGESEARCH_MODEL_REPOSITORY"], name
        assert head_env["IMAGESEARCH_ES_CA_CERTS"].startswith(mounts["es-certs"] + "/"), name
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert downloader["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert c.healthcheck_argv(head)[:2] == ["ray", "health-check"]
