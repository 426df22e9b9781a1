"""The `imagesearch` command: each subcommand is a thin shell that lives beside its service."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with configure(parser) and run(args) -> int; imported only when used, so
# `imagesearch search` never imports torch and `imagesearch export` never imports FastAPI.
COMMANDS = {
    "export": ("imagesearch.export.cli", "export open_clip or BLIP-2 models to ONNX + the Triton model repository"),
    "ingest": ("imagesearch.ingest.cli", "download/scan images and embed them"),
    "search": ("imagesearch.search.cli", "search the index by text or by image"),
    "duplicates": ("imagesearch.search.duplicates_cli", "list the groups of near-duplicate images"),
    "status": ("imagesearch.status", "counts, model and store"),
    "tags": ("imagesearch.tags.cli", "the tags of the indexed images, the most held first"),
    "remove": ("imagesearch.removal", "take images out of the index (records, vectors, files)"),
    "index": ("imagesearch.stores.elasticsearch.cli", "Elasticsearch vector index lifecycle: status, rebuild, swap"),
    "serve": ("imagesearch.api.cli", "run the search API"),
    "ui": ("imagesearch.ui.cli", "run the web UI"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser for ``argv`` (its subcommand configured); also used to check compose commands."""
    parser = argparse.ArgumentParser(prog="imagesearch", description="Semantic image search with CLIP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text)
        if name == chosen:  # only the chosen command's module is imported
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
