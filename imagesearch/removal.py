"""Taking images out: the one core behind ``imagesearch remove`` and ``DELETE /images/{id}``.

The store removes the records and vectors first (remembering the URLs, so the next ingest does not
bring them back), then the files go. A kill in between leaves files without records; running the
same removal again finds the ids again (by id, or through the remembered URL or path) and deletes
what is left, so nothing stays half-removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from imagesearch.blobs import BlobStore
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
