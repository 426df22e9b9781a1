"""The `imagesearch` command: each subcommand is a thin shell that lives beside its service."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with configure(parser) and run(args) -> int; imported only when used, so
# `imagesearch search` never imports torch and `imagesearch export` never imports FastAPI.
COMMANDS = {
    "export": ("export.cli", "export open_clip models to ONNX + Triton model repository"),
    "ingest": ("ingest.cli", "download/scan images and embed them"),
    "search": ("imagesearch.search_cli", "search the index by text or by image"),
    "status": ("imagesearch.status_cli", "counts, model and store"),
    "serve": ("api.cli", "run the search API"),
    "ui": ("ui.cli", "run the web UI"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagesearch", description="Semantic image search with CLIP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if name == chosen:  # only the chosen command's module is imported
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
