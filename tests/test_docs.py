"""The documentation: the site builds strictly (no broken link, anchor or page), the generated references
match the code and the benchmark results, every setting is described and on the configuration page,
and the README stays a short entry that says where the product is and how to reach it."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagesearch.config import SECTIONS, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIGURATION_PAGE = DOCS / "reference" / "configuration.md"
DEVELOPMENT_PAGE = DOCS / "development.md"
# Where users meet IMAGESEARCH_ variables: the product, its deployment files, the README and the docs.
VARIABLE_SOURCES = ["imagesearch", "api", "ui", "ingest", "export", "docker", "docker-compose.yml", "docker-compose.cpu.yml",
                    "docker-compose.blip2.yml", ".env.example", "README.md", "docs", "data/README.md", "Makefile"]


def docs_module(name: str):
    """A module of docs/ (the generators live there, not in the product)."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={**_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "openapi.json").is_file()


def test_the_generated_pages_are_up_to_date():
    done = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=_env())
    assert done.returncode == 0, f"{done.stderr[-4000:]}\nrun `make docs` and commit the result"


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGESEARCH_")}


# --- configuration ---------------------------------------------------------------------------------

def test_every_setting_has_a_description_and_a_section():
    undescribed = [name for section in SECTIONS for name, info in section.model_fields.items()
                   if not (info.description or "").strip()]
    assert not undescribed, f"settings without a description (imagesearch/config.py): {undescribed}"
    in_sections = [name for section in SECTIONS for name in section.model_fields]
    assert sorted(in_sections) == sorted(Settings.model_fields), "every setting belongs to exactly one of SECTIONS"
    assert all((section.__doc__ or "").strip() for section in SECTIONS), "each section's docstring is its title"


def test_every_setting_is_on_the_configuration_page_with_its_section_and_description():
    page = CONFIGURATION_PAGE.read_text()
    reference = docs_module("gen_reference")
    for section in SECTIONS:
        assert f"## {section.__doc__.strip().rstrip('.')}" in page
        for name, info in section.model_fields.items():
            row = next((line for line in page.splitlines() if line.startswith(f"| `IMAGESEARCH_{name.upper()}` |")), None)
            assert row, f"IMAGESEARCH_{name.upper()} is not on docs/reference/configuration.md"
            assert reference.cell(info.description) in row
            if reference.is_secret(info):
                assert "| *empty* |" in row, f"a secret's default shows as empty: {row}"


def test_every_imagesearch_variable_anywhere_is_documented():
    """Compose files, .env.example, the code and the docs name variables: each is a setting (on the
    configuration page) or one of the test and benchmark variables on the development page."""
    configuration, development = CONFIGURATION_PAGE.read_text(), DEVELOPMENT_PAGE.read_text()
    named: set[str] = set()
    for source in VARIABLE_SOURCES:
        path = ROOT / source
        for file in ([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p.suffix != ".pyc"]):
            named |= set(re.findall(r"\bIMAGESEARCH_[A-Z0-9_]*[A-Z0-9]\b", file.read_text(errors="replace")))
    settings = {f"IMAGESEARCH_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(v for v in named if f"`{v}`" not in (configuration if v in settings else development))
    assert not missing, f"variables named but not documented: {missing}"


# --- benchmarks ------------------------------------------------------------------------------------

def test_every_benchmark_result_says_where_it_came_from_and_the_page_has_four_plots():
    benchmarks = docs_module("gen_benchmarks")
    results = benchmarks.load_results()  # fails on a file that misses a field
    assert results
    for result in results:
        assert result["cpu"] and result["command"] and result["commit"] and result["figures"], result["file"]
        assert all(isinstance(row, dict) and row for row in result["figures"]), result["file"]
    page = (DOCS / "benchmarks.md").read_text()
    plots = re.findall(r"!\[[^\]]*\]\((images/benchmarks/[^)]+\.svg)\)", page)
    assert len(plots) >= 4
    assert all((DOCS / plot).is_file() for plot in plots)


def test_a_benchmark_run_is_rendered_on_the_page(tmp_path, monkeypatch):
    """What bench.common.save_results writes is what the page and its plots read."""
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench_store.py", "--sizes", "1000"])
    path = bench.common.save_results("bench_store", [
        {"vectors": 1000, "data": "clustered", "search": "exact", "p50_ms": 0.123456789, "recall_at_10": 1.0}],
        parameters={"dim": 512})
    saved = json.loads(path.read_text())
    assert saved["command"] == ".venv/bin/python -m bench.bench_store --sizes 1000"
    assert saved["figures"][0]["p50_ms"] == 0.12346  # five significant digits
    assert saved["cpu"] and saved["date"] and saved["commit"]
    benchmarks = docs_module("gen_benchmarks")
    results = benchmarks.load_results(tmp_path)
    plots = benchmarks.plots(results)
    page = benchmarks.page(results, plots)
    assert "| 1000 | clustered | exact | 0.12346 | 1.0 |" in page
    assert saved["cpu"] in next(p for p in plots if p.name == "query-latency-by-size").caption
    written = benchmarks.write_plots(plots, tmp_path / "plots")
    assert len(written) == len(plots) >= 4 and all(p.stat().st_size for p in written)
    assert benchmarks.write_plots(plots, tmp_path / "plots") == []  # the same data, the same bytes


# --- the README ------------------------------------------------------------------------------------

def test_the_readme_is_short_and_its_first_screen_says_how_to_reach_the_product():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:50])
    assert "http://127.0.0.1:8501" in first_screen  # the UI
    assert "curl 'http://127.0.0.1:8000/search?q=" in first_screen  # a first query
    assert "docker compose up" in first_screen
    assert "docker compose -f docker-compose.yml -f docker-compose.cpu.yml up" in first_screen


@pytest.mark.parametrize("document", ["README.md", "bench/results/README.md"])
def test_the_readmes_links_lead_somewhere(document):
    text = (ROOT / document).read_text()
    targets = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in t]
    missing = [t for t in targets if not (ROOT / document).parent.joinpath(t).exists()]
    assert not missing, f"{document} links to missing files: {missing}"
