"""Write the generated pages of the documentation site; `make docs` runs it before `mkdocs build`.

    .venv/bin/python docs/generate.py            # write them
    .venv/bin/python docs/generate.py --check    # write nothing; fail when a committed page is stale

The pages come from the code and the benchmark results, never by hand: the configuration reference
(imagesearch.config), the command-line reference (the argparse definitions), the REST API reference
and openapi.json (the app's schema), and the benchmarks page with its plots (bench/results/*.json).
``--check`` compares the pages' text; it checks that each plot exists, not its bytes, which
depend on the matplotlib version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def generated_pages() -> dict[str, Callable[[], str]]:
    """docs/-relative path: a function that returns the page's text."""
    import gen_benchmarks
    import gen_reference

    def openapi() -> str:
        return json.dumps(gen_reference.openapi_schema(), indent=2, ensure_ascii=False) + "\n"

    def api() -> str:
        return gen_reference.api_page(gen_reference.openapi_schema()) + "\n"

    def benchmarks() -> str:
        results = gen_benchmarks.load_results()
        return gen_benchmarks.page(results, gen_benchmarks.plots(results)) + "\n"

    return {
        "reference/configuration.md": lambda: gen_reference.configuration_page() + "\n",
        "reference/cli.md": lambda: gen_reference.cli_page() + "\n",
        "reference/openapi.json": openapi,
        "reference/api.md": api,
        "benchmarks.md": benchmarks,
    }


def plot_files() -> list[Path]:
    import gen_benchmarks

    names = [plot.name for plot in gen_benchmarks.plots(gen_benchmarks.load_results())]
    return [DOCS / gen_benchmarks.PLOTS / f"{name}.svg" for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a generated page differs")
    args = parser.parse_args(argv)
    for name in [name for name in os.environ if name.startswith("IMAGESEARCH_")]:
        del os.environ[name]  # the pages show the code's defaults, not this shell's settings
    sys.path.insert(0, str(DOCS))
    stale = []
    for relative, render in generated_pages().items():
        path, text = DOCS / relative, render()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(relative)
        elif not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote docs/{relative}")
    if args.check:
        stale += [str(path.relative_to(DOCS)) for path in plot_files() if not path.is_file()]
    else:
        import gen_benchmarks

        results = gen_benchmarks.load_results()
        for path in gen_benchmarks.write_plots(gen_benchmarks.plots(results), DOCS / gen_benchmarks.PLOTS):
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale generated documentation (run `make docs` and commit the result): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
