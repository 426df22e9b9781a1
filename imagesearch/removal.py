"""Taking images out: the one core behind ``imagesearch remove`` (defined here) and ``DELETE /images/{id}``.

The store removes the records and vectors first (remembering the URLs, so the next ingest does not
bring them back), then the files go. A kill in between leaves files without records; running the
same removal again finds the ids again (by id, or through the remembered URL or path) and deletes
what is left, so nothing stays half-removed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from imagesearch.blobs import BlobStore, make_blob_store
from imagesearch.records import is_image_id
from imagesearch.stores import VectorStore


@dataclass
class Removal:
    records: int  # records taken out of the store now
    files: int  # image files deleted now


def resolve(store: VectorStore, *, ids: Sequence[str] = (), urls: Sequence[str] = (), folders: Sequence[str] = ()) -> list[str]:
    """The ids to remove: given, or found by URL or folder (among stored and already removed images)."""
    bad = [i for i in ids if not is_image_id(i)]
    if bad:
        raise ValueError(f"not an image id (64 lower-case hex characters): {bad[0][:80]!r}")
    found = list(ids)
    for url in urls:
        found += store.find_ids(url=url)
    for folder in folders:
        found += store.find_ids(folder=folder)
    return list(dict.fromkeys(found))


def remove(store: VectorStore, blobs: BlobStore, ids: Sequence[str]) -> Removal:
    records = store.remove_images(ids)
    files = sum(blobs.delete(image_id) for image_id in ids)  # also the files an interrupted run left
    return Removal(records=len(records), files=files)


# --- `imagesearch remove --id ID | --url URL | --source folder:PATH` ------------------------------

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", action="append", default=[], help="an image id (repeatable)")
    parser.add_argument("--url", action="append", default=[], help="the image behind this URL (repeatable)")
    parser.add_argument("--source", action="append", default=[], metavar="folder:PATH",
                        help="every image found under this folder (repeatable)")


def run(args: argparse.Namespace) -> int:
    from imagesearch.blobs import BlobStorageError
    from imagesearch.config import get_settings
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
        done = remove(store, make_blob_store(settings), ids)
    except (ValueError, StoreUnavailable, BlobStorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"removed {done.records} images ({done.files} files); their URLs are not downloaded again "
          "unless `imagesearch ingest --retry-removed`")
    return 0
