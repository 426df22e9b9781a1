"""Content-addressed image files: ``<data>/images/ab/abcdef….<ext>``, named by the bytes' sha256.

The path never comes from a URL or a file name; files are written atomically (a temp file in
``<data>/images/incoming/``, then a hard link) and an existing file is never overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
from pathlib import Path

from imagesearch.formats import FORMATS
from imagesearch.records import is_image_id


class ImagesFolderFull(OSError):
    """No room left where the image files go. Not the image's fault: nothing is recorded for it,
    and the same URL or file is stored by the next run once there is space."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A temp file is written, fsynced and linked in well under a second; one this old was left by a
# process killed mid-write (SIGKILL, power loss) and nobody will link it.
LEFTOVER_AGE_S = 3600


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        # One folder for files being written, so that finding a killed writer's leftovers is one
        # small listing, not a walk over every image.
        self.incoming = self.root / "incoming"

    def path(self, image_id: str, fmt: str) -> Path:
        if not is_image_id(image_id):
            raise ValueError(f"not an image id (64 hex characters): {image_id[:80]!r}")
        return self.root / image_id[:2] / f"{image_id}.{FORMATS[fmt].extension if fmt in FORMATS else 'bin'}"

    def put(self, data: bytes, fmt: str, image_id: str | None = None) -> tuple[str, Path]:
        """Store ``data``; returns (id, path). Idempotent: the same bytes land on the same path once."""
        image_id = image_id or sha256_hex(data)
        path = self.path(image_id, fmt)
        if path.exists():
            return image_id, path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.incoming.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.incoming)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(tmp, path)  # fails if another writer got there first: never overwrite
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)  # also after a failed write: no partial file is left behind
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ImagesFolderFull(exc.errno, f"no space left for image files in {self.root}: free some space "
                                                  "(or point IMAGESEARCH_DATA_DIR elsewhere) and run the ingest again; "
                                                  "what was stored so far is kept") from exc
            raise
        return image_id, path

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
        """Delete the image's file, whatever its extension; returns how many files went (0 or 1)."""
        if not is_image_id(image_id):
            raise ValueError(f"not an image id (64 hex characters): {image_id[:80]!r}")
        deleted = 0
        for path in (self.root / image_id[:2]).glob(f"{image_id}.*"):
            path.unlink(missing_ok=True)
            deleted += 1
        return deleted

    def get(self, image_id: str, fmt: str) -> bytes:
        return self.path(image_id, fmt).read_bytes()
