"""The image files: a batch is written under temporary names, synced once, then named; one file is
fsynced on its own; a write that fails mid-batch keeps the files before it and leaves no partial file."""

from __future__ import annotations

import errno
import os
import sys

import imagesearch.blobs.folder as blobs_module
from imagesearch.blobs import FolderBlobStore, ImagesFolderFull, sha256_hex


def count_calls(monkeypatch, owner, name: str, before=None) -> list:
    """Let ``owner.name`` run as it does, remembering each call (and ``before()``'s view at that moment)."""
    calls, real = [], getattr(owner, name)

    def counted(*args):
        calls.append(before() if before else args)
        return real(*args)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_batch_is_synced_once_and_no_file_has_its_name_before_that(tmp_path, monkeypatch):
    if sys.platform == "linux":
        assert blobs_module._syncfs is not None  # the one-sync path is the one under test here
    blobs = FolderBlobStore(tmp_path / "images")
    old = os.urandom(500)
    old_id = blobs.put(old, "jpeg")
    old_path = blobs.path(old_id, "jpeg")
    new = [os.urandom(1000 + i) for i in range(5)]
    paths = [blobs.path(sha256_hex(data), "png") for data in new]
    incoming = tmp_path / "images" / "incoming"

    def on_disk_now():
        return sorted(p.name[:5] for p in incoming.iterdir()), [p for p in paths if p.exists()]

    syncs = count_calls(monkeypatch, blobs_module, "_sync_filesystem", on_disk_now)
    fsyncs = count_calls(monkeypatch, os, "fsync")
    items = [(data, "png", None) for data in new] + [(new[0], "png", None), (old, "jpeg", old_id)]
    stored, error = blobs.put_many(items)

    assert error is None
    assert syncs == [([".tmp-"] * 5, [])]  # one sync, of five temporary files, before any has its name
    assert fsyncs == []
    assert stored == [sha256_hex(d) for d in new] + [stored[0], old_id]
    assert [p.read_bytes() for p in paths] == new and old_path.read_bytes() == old
    assert list(incoming.iterdir()) == []

    one = os.urandom(300)
    assert blobs.put(one, "jpeg") == sha256_hex(one) and blobs.path(sha256_hex(one), "jpeg").read_bytes() == one
    assert len(syncs) == 1 and len(fsyncs) == 1  # a single file: its own fsync, not the whole filesystem's


class FullAfter(FolderBlobStore):
    """The real store, whose disk fills up after ``room`` files."""

    def __init__(self, root, room: int):
        super().__init__(root)
        self.room = room

    def _write_temp(self, data: bytes, fsync: bool) -> str:
        if self.room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        return super()._write_temp(data, fsync)


def test_a_full_disk_mid_batch_keeps_the_files_before_it_and_no_partial_file(tmp_path):
    blobs = FullAfter(tmp_path / "images", room=2)
    data = [os.urandom(800 + i) for i in range(4)]
    stored, error = blobs.put_many([(d, "jpeg", None) for d in data])

    assert isinstance(error, ImagesFolderFull) and "no space left for image files" in str(error)
    assert stored == [sha256_hex(d) for d in data[:2]]
    assert [blobs.path(image_id, "jpeg").read_bytes() for image_id in stored] == data[:2]
    assert not blobs.path(sha256_hex(data[2]), "jpeg").exists()
    assert list((tmp_path / "images" / "incoming").iterdir()) == []


def test_a_folder_removed_under_a_running_process_is_made_again(tmp_path):
    blobs = FolderBlobStore(tmp_path / "images")
    first = os.urandom(100)
    path = blobs.path(blobs.put(first, "jpeg"), "jpeg")
    path.unlink()
    path.parent.rmdir()
    (tmp_path / "images" / "incoming").rmdir()
    image_id = blobs.put(first, "jpeg")
    again = blobs.path(image_id, "jpeg")
    assert again == path and path.read_bytes() == first and image_id == sha256_hex(first)
