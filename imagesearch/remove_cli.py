"""`imagesearch remove --id ID | --url URL | --source folder:PATH`: take images out of the index."""

from __future__ import annotations

import argparse
import sys

from imagesearch.config import get_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", action="append", default=[], help="an image id (repeatable)")
    parser.add_argument("--url", action="append", default=[], help="the image behind this URL (repeatable)")
    parser.add_argument("--source", action="append", default=[], metavar="folder:PATH",
                        help="every image found under this folder (repeatable)")


def run(args: argparse.Namespace) -> int:
    from imagesearch.blobs import BlobStore
    from imagesearch.removal import remove, resolve
    from imagesearch.stores import StoreUnavailable, make_store

    folders = []
    for source in args.source:
        kind, _, path = source.partition(":")
        if kind != "folder" or not path:
            print(f"error: --source takes folder:PATH, not {source!r}", file=sys.stderr)
            return 2
        folders.append(path)
    if not (args.id or args.url or folders):
        print("nothing to remove: give --id, --url or --source folder:PATH", file=sys.stderr)
        return 2
    settings = get_settings()
    store = make_store(settings)
    try:
        ids = resolve(store, ids=args.id, urls=args.url, folders=folders)
        done = remove(store, BlobStore(settings.images_dir), ids)
    except (ValueError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"removed {done.records} images ({done.files} files); their URLs are not downloaded again "
          "unless `imagesearch ingest --retry-removed`")
    return 0
