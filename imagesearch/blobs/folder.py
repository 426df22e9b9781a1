"""Blobs in a content-addressed folder: ``<data>/images/ab/abcdef….<ext>``, named by the bytes' sha256;
thumbnails in ``<data>/images/thumbnails/ab/abcdef….webp``.

The path never comes from a URL or a file name; files are written atomically (a temp file in
``<data>/images/incoming/``, then a hard link) and an existing file is never overwritten.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from imagesearch.blobs.base import (
    THUMBNAIL,
    BlobItem,
    BlobMissing,
    BlobReader,
    BlobStorageError,
    ImagesFolderFull,
    blob_name,
    check_id,
    sha256_hex,
)

_READ_CHUNK = 1024 * 1024

# A temp file is written, synced and linked within seconds; one this old was left by a
# process killed mid-write (SIGKILL, power loss) and nobody will link it.
LEFTOVER_AGE_S = 3600


def _find_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) (Python has no os.syncfs): one call makes every file written so far on a
    filesystem durable, where an fsync per file would cost about as much as writing it. None elsewhere."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    syncfs.argtypes, syncfs.restype = [ctypes.c_int], ctypes.c_int
    return syncfs


_syncfs = _find_syncfs()


def _sync_filesystem(folder: Path) -> None:
    assert _syncfs is not None
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:  # reports write-back errors since Linux 5.8, like fsync
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs on {folder}: {os.strerror(err)}")
    finally:
        os.close(fd)


class FolderBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)
        # One folder for files being written, so that finding a killed writer's leftovers is one
        # small listing, not a walk over every image.
        self.incoming = self.root / "incoming"

    def path(self, image_id: str, fmt: str) -> Path:
        return self.root / blob_name(image_id, fmt)

    def put(self, data: bytes, fmt: str, image_id: str | None = None) -> str:
        """Store ``data``; returns its id. Idempotent: the same bytes land on the same path once."""
        stored, error = self.put_many([(data, fmt, image_id)])
        if error is not None:
            raise error
        return stored[0]

    def put_many(self, items: Sequence[BlobItem]) -> tuple[list[str], BlobStorageError | None]:
        """Store several files with one disk sync for them all instead of one per file. Each is
        written under a temporary name, then all are synced, then each gets its name, so a file is
        on disk before it has its name. A full disk stops the rest with ``ImagesFolderFull``."""
        stored, error = self._put_many(items)
        if error is None or isinstance(error, BlobStorageError):
            return stored, error
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return stored, ImagesFolderFull(error.errno, f"no space left for image files in {self.root}: free some space "
                                                         "(or point IMAGESEARCH_DATA_DIR elsewhere) and run the ingest "
                                                         "again; what was stored so far is kept")
        return stored, BlobStorageError(error.errno, f"writing image files in {self.root}: {error.strerror or error}")

    def _put_many(self, items: Sequence[BlobItem]) -> tuple[list[str], OSError | None]:
        stored: list[tuple[str, Path]] = []  # (id, path) of the items stored, in order
        temps: dict[Path, str] = {}  # final path -> its temporary file, for the new files
        one_sync = len(items) > 1 and _syncfs is not None
        error: OSError | None = None
        try:
            try:
                for data, fmt, image_id in items:
                    image_id = image_id or sha256_hex(data)
                    path = self.path(image_id, fmt)
                    if path not in temps and not path.exists():
                        temps[path] = self._write_temp(data, fsync=not one_sync)
                    stored.append((image_id, path))
            except OSError as exc:  # the files before it are still stored
                error = exc
            if one_sync and temps:
                _sync_filesystem(self.incoming)
            for path, tmp in temps.items():
                self._link(tmp, path)
        except OSError as exc:  # a file not synced or not named is not stored
            error, stored = error or exc, [(i, path) for i, path in stored if path.exists()]
        finally:
            for tmp in temps.values():
                os.unlink(tmp)  # also after a failed write: no partial file is left behind
        return [image_id for image_id, _ in stored], error

    def _write_temp(self, data: bytes, fsync: bool) -> str:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.incoming)
        except FileNotFoundError:  # made on first use (or removed under this running process)
            self.incoming.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.incoming)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        except OSError:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        return tmp

    @staticmethod
    def _link(tmp: str, path: Path) -> None:
        """Give the file its name; an existing file is never overwritten (it has the same bytes)."""
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except FileNotFoundError:  # its folder is made on first use: saves two system calls per image
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)

    def sweep_leftovers(self, older_than_s: float = LEFTOVER_AGE_S) -> int:
        """Delete the temp files of writers killed mid-write; returns how many went. Files younger
        than ``older_than_s`` may belong to a writer still running (another ingest) and stay."""
        if not self.incoming.is_dir():
            return 0
        swept, cutoff = 0, time.time() - older_than_s
        for entry in os.scandir(self.incoming):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    swept += 1
            except FileNotFoundError:  # another ingest swept it first
                pass
        return swept

    def delete(self, image_id: str) -> int:
        """Delete the image's file, whatever its extension, and its thumbnail; returns how many image
        files went (0 or 1)."""
        check_id(image_id)
        deleted = 0
        for path in (self.root / image_id[:2]).glob(f"{image_id}.*"):
            path.unlink(missing_ok=True)
            deleted += 1
        self.path(image_id, THUMBNAIL).unlink(missing_ok=True)
        return deleted

    def get(self, image_id: str, fmt: str) -> bytes:
        try:
            return self.path(image_id, fmt).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(errno.ENOENT, f"no image file for {image_id}") from None

    def open(self, image_id: str, fmt: str) -> BlobReader:
        path = self.path(image_id, fmt)
        if not path.is_file():
            raise BlobMissing(errno.ENOENT, f"no image file for {image_id}")
        return BlobReader(size=path.stat().st_size, chunks=_chunks(path), path=path)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            yield chunk
