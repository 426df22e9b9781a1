"""What every node of the Ray cluster must share with the driver, checked before a pipeline starts.

The tasks write where the driver's settings say. An S3 bucket and Elasticsearch are reached over
the network from anywhere; the images folder and the local store are folders, which every node
sees only when they share them: the nodes of one machine (or containers with one volume), or a
shared filesystem. Each node is asked whether it sees a file the driver has just written there;
a node that does not would store images or records the others never see, so the run is refused.
The local store is one SQLite file, whose locking a network filesystem does not keep: on one
machine only.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from imagesearch.config import Settings

# /proc/mounts types whose file locks SQLite cannot rely on
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "9p", "ceph", "glusterfs", "lustre", "fuse.sshfs", "fuse.s3fs")
DOCS = "see docs/deployment/ray.md"


class ClusterRefused(ValueError):
    """The configuration cannot work on this cluster (said why)."""


def check_shared(settings: Settings) -> None:
    """Raise ``ClusterRefused`` unless every node sees the folders the settings put data in."""
    folders = {}
    if settings.store == "local":
        folders["the local store (IMAGESEARCH_STORE=local)"] = settings.data_dir
        if filesystem(settings.data_dir) in NETWORK_FILESYSTEMS:
            raise ClusterRefused(f"the local store in {settings.data_dir} is on a network filesystem "
                                 f"({filesystem(settings.data_dir)}), whose locks SQLite cannot rely on: use "
                                 f"IMAGESEARCH_STORE=elasticsearch ({DOCS})")
    if not settings.blobs:
        folders["the images folder (IMAGESEARCH_BLOBS empty)"] = settings.images_dir
    for what, folder in folders.items():
        blind = nodes_not_seeing(folder)
        if blind:
            raise ClusterRefused(f"{what} is {folder} on this machine, which {blind} of the Ray cluster's nodes do not "
                                 "see: use IMAGESEARCH_STORE=elasticsearch and IMAGESEARCH_BLOBS=s3://…, or a folder "
                                 f"every node shares ({DOCS})")


def nodes_not_seeing(folder: Path) -> int:
    """How many alive nodes do not see a file written in ``folder`` now."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".ray-check-{uuid.uuid4().hex}"
    marker.write_bytes(b"")
    try:
        nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
        look = ray.remote(_exists)
        checks = [look.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                  .remote(str(marker)) for node in nodes]
        return sum(not seen for seen in ray.get(checks, timeout=120))
    finally:
        marker.unlink(missing_ok=True)


def _exists(path: str) -> bool:
    return Path(path).exists()


def filesystem(folder: Path) -> str:
    """The filesystem type of the mount ``folder`` is on (Linux; "" elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    folder = folder.resolve()
    best = max((m for m in mounts if len(m) > 2 and folder.is_relative_to(m[1])), key=lambda m: len(m[1]), default=None)
    return best[2] if best else ""
