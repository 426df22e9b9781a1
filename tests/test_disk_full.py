"""A full disk under the images folder: the ingest stops with one line that says what to do, keeps
what it stored, blames no URL, leaves no partial file; once there is room, a rerun stores the rest.

The images folder is a small tmpfs, mounted in a private mount namespace (``unshare``: no root
needed, nothing to clean up), where the two ingests run one after the other with the test's image
server as the source. Copies of the folder and of the store after each run are checked here."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.cli import REPO, cli_env
from tests.support.search_api import make_shapes

PAGE = 4096

SCRIPT = """
set -u
mount -t tmpfs -o size="$SMALL" tmpfs "$IMAGES"
snapshot() {
    mkdir -p "$OUT/$1" && cp -a "$IMAGES" "$OUT/$1/images" && cp "$DATA"/store.sqlite3* "$OUT/$1/"
}
"$PY" -m imagesearch.cli ingest download --urls "$URLS" > "$OUT/first.log" 2>&1; echo $? > "$OUT/first.rc"
snapshot when-full
mount -o remount,size=16m "$IMAGES"
"$PY" -m imagesearch.cli ingest download --urls "$URLS" > "$OUT/second.log" 2>&1; echo $? > "$OUT/second.rc"
snapshot after
"""


def files(folder: Path) -> dict[str, Path]:
    """The image files by name, and what is being written (not the thumbnails)."""
    return {p.stem: p for p in folder.rglob("*") if p.is_file() and "thumbnails" not in p.relative_to(folder).parts}


def store_rows(folder: Path) -> tuple[set[str], int]:
    db = sqlite3.connect(folder / "store.sqlite3")
    try:
        return {r[0] for r in db.execute("SELECT id FROM images")}, db.execute("SELECT COUNT(*) FROM failures").fetchone()[0]
    finally:
        db.close()


def test_a_full_images_folder_stops_the_ingest_clearly_and_a_rerun_stores_the_rest(image_server, tmp_path, test_model_repo):
    images = {hashlib.sha256(s.data).hexdigest(): s.data for s in make_shapes(3, seed=31)}
    urls = [image_server.add(f"/{i}.jpg", data) for i, data in enumerate(images.values())]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    pages = sum(-(-len(data) // PAGE) for data in images.values())
    data_dir, out = tmp_path / "var", tmp_path / "out"
    (data_dir / "images").mkdir(parents=True)
    out.mkdir()
    env = cli_env(data_dir, test_model_repo, IMAGESEARCH_DOWNLOAD_WRITE_BATCH="4", SMALL=f"{PAGE * (pages // 2)}",
                  IMAGES=str(data_dir / "images"), DATA=str(data_dir), OUT=str(out), URLS=str(tmp_path / "urls.txt"),
                  PY=sys.executable)
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", SCRIPT], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    # the first run: stopped by the full disk, with a message to act on
    first_log = (out / "first.log").read_text()
    assert (out / "first.rc").read_text().strip() == "1", first_log
    assert f"error: no space left for image files in {data_dir / 'images'}" in first_log
    assert "Traceback" not in first_log
    stored, failures = store_rows(out / "when-full")
    on_disk = files(out / "when-full" / "images")
    assert 0 < len(stored) < len(images)
    assert stored <= set(on_disk)  # every record has its file...
    assert not [p for p in on_disk.values() if p.name.startswith(".tmp-")]  # ...and no partial file is left
    assert failures == 0  # the full disk is no URL's fault: nothing is marked failed, nothing skipped later

    # with room again, the same command stores the rest: each image once, intact
    second_log = (out / "second.log").read_text()
    assert (out / "second.rc").read_text().strip() == "0", second_log
    assert f"{len(images) - len(stored)} downloaded" in second_log and f"{len(stored)} already known" in second_log
    stored, failures = store_rows(out / "after")
    on_disk = files(out / "after" / "images")
    assert stored == set(images) == set(on_disk) and failures == 0
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == name for name, p in on_disk.items())
    shutil.rmtree(out)
