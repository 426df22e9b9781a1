"""Ingest end to end with the real command: folders and URL lists -> store -> search; crash safety."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from imagesearch.config import Settings
from imagesearch.encoders import make_encoder, row_cosines
from imagesearch.preprocess import prepare
from imagesearch.stores.local import LocalStore
from tests.support import shapes
from tests.support.cli import REPO, cli_env, command, run_cli, start_cli
from tests.support.image_server import ImageServer, Reply


def write_folder(root, n_per_class: int, seed: int, fmt: str = "JPEG") -> list[shapes.ShapeImage]:
    items = shapes.dataset(n_per_class, seed)
    for i, item in enumerate(items):
        sub = root / item.colour
        sub.mkdir(parents=True, exist_ok=True)
        suffix = {"JPEG": ".JPG" if i % 2 else ".jpeg", "PNG": ".png"}[fmt]
        (sub / f"{item.shape}-{i}{suffix}").write_bytes(item.encode(fmt))
    return items


def search(env, text: str, k: int = 5) -> list[dict]:
    result = run_cli("search", text, "-k", str(k), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["results"]


def colour_shape_of(result: dict) -> tuple[str, str]:
    """Recover colour and shape from the folder layout (<colour>/<shape>-N.ext) or the URL caption."""
    if result["captions"]:
        _, colour, shape = result["captions"][0].split()
        return colour, shape
    path = result["url"]
    return path.split("/")[-2], path.split("/")[-1].split("-")[0]


def test_folder_ingest_then_search_finds_the_right_shapes(tmp_path, test_model_repo):
    folder = tmp_path / "photos"
    write_folder(folder, n_per_class=6, seed=11)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    env = cli_env(tmp_path / "var", test_model_repo)

    first = run_cli("ingest", "--folder", str(folder), env=env)
    assert first.returncode == 0, first.stderr
    assert "stored 72" in first.stdout and "failed:" in first.stdout
    assert "72 embedded" in first.stdout

    for colour, shape in [("red", "circle"), ("blue", "square"), ("yellow", "triangle"), ("green", "square")]:
        found = [colour_shape_of(r) for r in search(env, f"a {colour} {shape}", k=5)]
        # the model's own precision bar is in test_semantic.py; here: ingest serves the right images
        assert found[0] == (colour, shape) and found.count((colour, shape)) >= 4, found

    # `imagesearch search --image FILE|URL` and `--id`: the example image itself comes first.
    example = next(folder.rglob("circle-*"))
    example_id = hashlib.sha256(example.read_bytes()).hexdigest()
    by_file = run_cli("search", "--image", str(example), "-k", "3", "--json", env=env)
    assert by_file.returncode == 0, by_file.stderr
    assert json.loads(by_file.stdout)["results"][0]["id"] == example_id
    with ImageServer() as server:
        by_url = run_cli("search", "--image", server.add("/example.jpg", example.read_bytes()), "-k", "3", "--json", env=env)
    assert by_url.returncode == 0, by_url.stderr
    assert json.loads(by_url.stdout)["results"][0]["id"] == example_id
    by_id = run_cli("search", "--id", example_id, "-k", "3", "--json", env=env)
    assert json.loads(by_id.stdout)["results"][0]["id"] == example_id

    # `--mode text`: by the words of file names (here <colour>/<shape>-N), only the triangles.
    by_words = run_cli("search", "triangle", "--mode", "text", "-k", "30", "--json", env=env)
    assert by_words.returncode == 0, by_words.stderr
    words = json.loads(by_words.stdout)["results"]
    assert len(words) == 24 and all(r["matched"] == ["text"] and colour_shape_of(r)[1] == "triangle" for r in words), words
    printed = run_cli("search", "a red triangle", "--mode", "hybrid", "-k", "3", env=env)
    assert printed.returncode == 0 and printed.stdout.count("[vector+text]") >= 1, printed.stdout
    assert run_cli("search", "--id", example_id, "--mode", "text", env=env).returncode == 2

    again = run_cli("ingest", "--folder", str(folder), env=env)  # re-run: no new work
    assert "known 72" in again.stdout and "stored" not in again.stdout.split("folder")[1].split("\n")[0]
    assert "0 embedded" in again.stdout

    status = run_cli("status", "--json", env=env)
    counts = json.loads(status.stdout)["counts"]
    assert (counts["images"], counts["embedded"], counts["pending"]) == (72, 72, 0)


def test_url_ingest_with_captions_duplicates_and_failures(tmp_path, test_model_repo):
    items = shapes.dataset(n_per_class=3, seed=21)
    with ImageServer() as server:
        lines = ["# test list", ""]
        for i, item in enumerate(items):
            lines.append(f"{server.add(f'/img/{i}.jpg', item.encode())}\t{item.caption}")
        lines.append(f"{server.add('/copy-of-0.jpg', items[0].encode())}\t{items[0].caption}")  # same bytes
        lines.append(server.url("/nope.jpg"))  # 404
        lines.append(server.add("/page.jpg", b"<html>not an image</html>"))
        lines.append("not a url at all")
        server.add_sequence("/flaky.jpg", [Reply(503), Reply(200, items[1].encode("PNG"), "image/png")])
        lines.append(server.url("/flaky.jpg"))
        url_file = tmp_path / "urls.txt"
        url_file.write_text("\n".join(lines) + "\n")
        env = cli_env(tmp_path / "var", test_model_repo)

        result = run_cli("ingest", "--urls", str(url_file), env=env)
        assert result.returncode == 0, result.stderr
        assert "urls.txt:" in result.stderr and "skipped" in result.stderr  # malformed line reported
        store = LocalStore(tmp_path / "var" / "store.sqlite3")
        counts = store.counts("shapes-tiny")
        assert counts.images == len(items) + 1  # +1: the PNG behind /flaky.jpg; the copy merged
        assert counts.embedded == counts.images and counts.pending == 0
        assert counts.failed_by_reason == {"http_status": 1, "not_an_image": 1}
        first = store.get(hashlib.sha256(items[0].encode()).hexdigest())
        assert sorted(first.urls) == sorted([server.url("/img/0.jpg"), server.url("/copy-of-0.jpg")])  # concurrent: any order
        assert first.captions == [items[0].caption] and first.sources == ["url"]

        results = search(env, "a green triangle", k=3)
        assert all(r["captions"] == ["a green triangle"] for r in results)
        assert all(r["image_url"] == f"/images/{r['id']}" for r in results)

        rerun = run_cli("ingest", "--urls", str(url_file), env=env)
        assert "0 downloaded" in rerun.stdout and "0 embedded" in rerun.stdout
        assert "2 skipped (failed before; use --retry-failed)" in rerun.stdout

        # the missing image appears: `--retry-failed` tries exactly the two failures, and gets it
        server.add("/nope.jpg", items[2].encode("PNG"), "image/png")
        retried = run_cli("ingest", "--retry-failed", env=env)
        assert retried.returncode == 0, retried.stderr
        assert "retry failed: 1 downloaded" in retried.stdout and "1 failed (not_an_image 1)" in retried.stdout
        assert "1 embedded" in retried.stdout
        assert (server.hits["/nope.jpg"], server.hits["/page.jpg"], server.hits["/img/0.jpg"]) == (2, 2, 1)
        assert [f.url for f in store.failures()] == [server.url("/page.jpg")]


def test_folder_ingest_reads_every_supported_format(tmp_path, test_model_repo):
    item = shapes.dataset(n_per_class=1, seed=23)[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    formats = {"png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "jpeg": "JPEG"}
    for name, pillow in formats.items():
        (folder / f"picture.{name}").write_bytes(item.encode(pillow, **({"lossless": True} if name == "webp" else {})))
    # The GIF's pixels as a palette PNG: a palette image is resized with NEAREST (as open_clip does),
    # so the GIF is compared with this one rather than with the RGB files.
    with Image.open(folder / "picture.gif") as gif:
        gif.save(folder / "palette.png")
    env = cli_env(tmp_path / "var", test_model_repo)
    result = run_cli("ingest", "--folder", str(folder), env=env)
    assert result.returncode == 0, result.stderr
    assert "stored 7" in result.stdout and "7 embedded" in result.stdout
    store = LocalStore(tmp_path / "var" / "store.sqlite3")
    stored = {store.get(hashlib.sha256(p.read_bytes()).hexdigest()).format for p in folder.iterdir()}
    assert stored == set(formats)
    vector = {p.name: store.get_vector("shapes-tiny", hashlib.sha256(p.read_bytes()).hexdigest()) for p in folder.iterdir()}
    for name in ("picture.webp", "picture.bmp", "picture.tiff"):  # the same pixels, whatever the container
        assert np.allclose(vector[name], vector["picture.png"], atol=1e-5), name
    assert np.allclose(vector["picture.gif"], vector["palette.png"], atol=1e-5)
    assert float(vector["picture.jpeg"] @ vector["picture.png"]) > 0.99  # JPEG's loss moves it a little


def test_download_and_embed_run_at_the_same_time_in_two_processes(tmp_path, test_model_repo):
    """`ingest embed --follow` started on an empty store embeds what two later downloads store, while
    it runs; SIGTERM then stops it cleanly (exit 0, with its summary), as `docker compose stop` does."""
    env = cli_env(tmp_path / "var", test_model_repo)
    store = LocalStore(tmp_path / "var" / "store.sqlite3")
    embedder = start_cli("ingest", "embed", "--follow", env=env)
    try:
        for part, seed in enumerate((31, 32), start=1):
            folder = tmp_path / f"photos-{part}"
            write_folder(folder, n_per_class=5, seed=seed)
            downloader = run_cli("ingest", "download", "--folder", str(folder), env=env)
            assert downloader.returncode == 0, downloader.stderr
            deadline = time.monotonic() + 120
            while store.counts("shapes-tiny").embedded < 60 * part and time.monotonic() < deadline:
                assert embedder.poll() is None, embedder.stdout.read()  # the same process embeds both parts
                time.sleep(0.2)
            assert store.counts("shapes-tiny").embedded == 60 * part
    finally:
        embedder.send_signal(signal.SIGTERM)
        output, _ = embedder.communicate(timeout=60)
    assert embedder.returncode == 0, output
    assert "embed: 120 embedded" in output
    counts = store.counts("shapes-tiny")
    assert (counts.images, counts.embedded, counts.pending) == (120, 120, 0)


def kill_when(process, reached, what: str, timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as ``reached()`` says the state is there; the process must still be
    running then, and must die by the signal (not finish first, which would prove nothing)."""
    deadline = time.monotonic() + timeout
    while not reached():
        assert process.poll() is None, f"the ingest ended before {what}: {process.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{what} not reached in {timeout:.0f}s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL, f"the ingest was not killed {what}"


class LocalState:
    """What a reader sees in a local store and its images folder while (or after) an ingest runs."""

    def __init__(self, data_dir):
        self.data_dir = data_dir

    def read(self) -> tuple[set[str], set[str], set[str]]:
        """(record ids, vector ids, ids of complete image files)."""
        path = self.data_dir / "store.sqlite3"
        files = {p.stem for p in (self.data_dir / "images").rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}
        if not path.exists():
            return set(), set(), files
        db = sqlite3.connect(path, timeout=30)
        try:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'vectors'").fetchone():
                return set(), set(), files
            records = {r[0] for r in db.execute("SELECT id FROM images")}
            vectors = {r[0] for r in db.execute("SELECT id FROM vectors WHERE model = 'shapes-tiny'")}
            return records, vectors, files
        finally:
            db.close()

    def check_consistent(self) -> tuple[set[str], set[str], set[str]]:
        """After a kill: the database is intact, every record has its file, every vector its record."""
        db = sqlite3.connect(self.data_dir / "store.sqlite3")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0  # a kill blames no URL
        db.close()
        records, vectors, files = self.read()
        assert records <= files and vectors <= records
        return records, vectors, files


def test_kill_minus_9_while_scanning_and_while_embedding_then_rerun_gives_every_image_exactly_once(tmp_path, test_model_repo):
    folder = tmp_path / "photos"
    items = write_folder(folder, n_per_class=25, seed=41)  # 300 images
    expected = {hashlib.sha256(item.encode()).hexdigest() for item in items}
    env = cli_env(tmp_path / "var", test_model_repo, IMAGESEARCH_BATCH_SIZE="16", IMAGESEARCH_DOWNLOAD_WRITE_BATCH="8")
    state = LocalState(tmp_path / "var")

    # 1. in the folder scan, with image files written whose records are not (the batch is in memory)
    def between_file_and_record() -> bool:
        records, _, files = state.read()
        return len(records) >= 40 and len(files) > len(records)

    kill_when(start_cli("ingest", "--folder", str(folder), env=env), between_file_and_record, "between file and record")
    records, vectors, files = state.check_consistent()  # the embedder may have started on the first records
    assert 40 <= len(records) < len(expected)

    # 2. in the embed stage (run alone after the scan, so that every batch is a full one of 16)
    assert run_cli("ingest", "download", "--folder", str(folder), env=env).returncode == 0

    def mid_embedding() -> bool:
        return len(state.read()[1]) >= len(vectors) + 64

    kill_when(start_cli("ingest", "embed", env=env), mid_embedding, "in the middle of the embedding")
    before = vectors
    records, vectors, files = state.check_consistent()
    assert records == expected and 64 <= len(vectors - before) < len(expected)
    assert len(vectors - before) % 16 == 0  # a batch of vectors is one transaction: all of it or none

    final = run_cli("ingest", "--folder", str(folder), env=env)
    assert final.returncode == 0, final.stderr
    records, vectors, files = state.check_consistent()
    assert records == vectors == files == expected  # each exactly once (ids are primary keys)
    complete = [p for p in (tmp_path / "var" / "images").glob("??/*")]
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in complete)


def test_kill_minus_9_in_a_url_download_then_rerun_fetches_only_the_rest(tmp_path, test_model_repo):
    items = shapes.dataset(20, seed=43)  # 240 images
    expected = {hashlib.sha256(item.encode()).hexdigest() for item in items}
    assert len(expected) == len(items)
    with ImageServer() as server:
        urls = [server.add(f"/{i}.jpg", item.encode()) for i, item in enumerate(items)]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        env = cli_env(tmp_path / "var", test_model_repo, IMAGESEARCH_DOWNLOAD_WRITE_BATCH="8",
                      IMAGESEARCH_DOWNLOAD_CONCURRENCY="4")
        state = LocalState(tmp_path / "var")
        kill_when(start_cli("ingest", "download", "--urls", str(tmp_path / "urls.txt"), env=env),
                  lambda: len(state.read()[0]) >= 40, "in the middle of the download")
        records, _, files = state.check_consistent()
        assert 40 <= len(records) < len(expected)
        rerun = run_cli("ingest", "download", "--urls", str(tmp_path / "urls.txt"), env=env)
        assert rerun.returncode == 0, rerun.stderr
        assert f"{len(records)} already known" in rerun.stdout
        ids = [hashlib.sha256(item.encode()).hexdigest() for item in items]
        assert all(server.hits[f"/{i}.jpg"] == 1 for i, image_id in enumerate(ids) if image_id in records)  # not fetched again
    records, _, files = state.check_consistent()
    assert records == files == expected


def test_the_next_ingest_deletes_partial_files_of_a_killed_one_and_leaves_a_running_ones(tmp_path, test_model_repo):
    folder = tmp_path / "photos"
    items = write_folder(folder, n_per_class=1, seed=44)
    incoming = tmp_path / "var" / "images" / "incoming"
    incoming.mkdir(parents=True)
    killed, running = incoming / ".tmp-killed", incoming / ".tmp-running"
    killed.write_bytes(b"\xff\xd8 half a JPEG")
    os.utime(killed, (time.time() - 2 * 3600,) * 2)  # left by an ingest killed two hours ago
    running.write_bytes(b"\xff\xd8 being written")  # another ingest's write in flight
    done = run_cli("ingest", "download", "--folder", str(folder), env=cli_env(tmp_path / "var", test_model_repo))
    assert done.returncode == 0, done.stderr
    assert "deleted 1 partial files left by an ingest killed mid-write" in done.stdout
    assert not killed.exists() and running.exists()
    assert sorted(p.name for p in incoming.iterdir()) == [".tmp-running"]  # the writes of this run left nothing
    stored = {p.stem for p in (tmp_path / "var" / "images").glob("??/*")}
    assert stored == {hashlib.sha256(item.encode()).hexdigest() for item in items}


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_the_embedder_loads_and_checks_only_the_image_tower(test_model_repo, runtime):
    settings = Settings(model_repository=test_model_repo, model="shapes-tiny", encoder=runtime)
    both, images_only = make_encoder(settings), make_encoder(settings, towers=("visual",))
    assert set(images_only.health()["reference_check"]["worst_cosine"]) == {"visual"}
    pixels = np.stack([prepare(item.encode("PNG"), both.card) for item in shapes.dataset(n_per_class=1, seed=45)])
    assert np.array_equal(images_only.encode_images(pixels), both.encode_images(pixels))
    with pytest.raises(ValueError, match="loaded without its textual tower"):
        images_only.encode_texts(["a red circle"])


def test_the_ingest_encoder_runs_parts_of_each_batch_at_once_and_gives_the_same_vectors(test_model_repo):
    # 12 images in batches of 5 (5, 5, 2), each cut into 3 parts run at once on one thread each
    settings = Settings(model_repository=test_model_repo, model="shapes-tiny", batch_size=5, onnx_threads=3, onnx_image_runs=3)
    bulk, queries = make_encoder(settings, towers=("visual",), bulk=True), make_encoder(settings)
    assert (bulk.health()["image_runs"], queries.health()["image_runs"]) == (3, 1)  # the API: one run on all threads
    assert bulk._sessions["visual"].get_session_options().intra_op_num_threads == 1
    assert bulk.health()["reference_check"]["ok"]  # the parity batch went through the parts too
    pixels = np.stack([prepare(item.encode("PNG"), bulk.card) for item in shapes.dataset(n_per_class=1, seed=46)])
    assert len(pixels) == 12
    together, apart = bulk.encode_images(pixels), queries.encode_images(pixels)
    assert together.shape == apart.shape
    # each image's own vector, in its place (other threads sum in another order: not bit for bit)
    assert row_cosines(together, apart).min() > 0.99999
    assert row_cosines(together, apart[::-1]).min() < 0.99  # the images differ: a swap would show
    assert row_cosines(bulk.encode_images(pixels[:1]), apart[:1])[0] > 0.99999  # one image: one part
    bulk.close()


def test_embed_marks_a_corrupt_stored_file_and_goes_on(tmp_path, test_model_repo):
    folder = tmp_path / "photos"
    items = write_folder(folder, n_per_class=1, seed=51)
    env = cli_env(tmp_path / "var", test_model_repo)
    assert run_cli("ingest", "download", "--folder", str(folder), env=env).returncode == 0
    victim = hashlib.sha256(items[0].encode()).hexdigest()
    path = next((tmp_path / "var" / "images").glob(f"??/{victim}.*"))
    path.write_bytes(path.read_bytes()[:1500])  # damaged on disk after download
    result = run_cli("ingest", "embed", env=env)
    assert result.returncode == 0, result.stderr
    assert "11 embedded" in result.stdout and "truncated 1" in result.stdout
    counts = LocalStore(tmp_path / "var" / "store.sqlite3").counts("shapes-tiny")
    assert (counts.embedded, counts.embed_failed, counts.pending) == (11, 1, 0)


def test_search_errors_are_clear(tmp_path, test_model_repo):
    env = cli_env(tmp_path / "var", test_model_repo)
    result = run_cli("search", "--id", "0" * 64, env=env)
    assert result.returncode == 1 and "no image with id" in result.stderr
    result = run_cli("search", env=env)
    assert result.returncode == 2 and "exactly one of" in result.stderr
    result = run_cli("ingest", env=env)
    assert result.returncode == 2 and "nothing to ingest" in result.stderr


def copy_model(source, repository, slug: str) -> None:
    """The test model again under another name (same weights): a second model in the repository."""
    card = json.loads((source / "shapes-tiny.json").read_text())
    card.update(slug=slug, reference=f"{slug}.reference.npz")
    card["tokenizer"]["file"] = f"{slug}.tokenizer.json"
    (repository / f"{slug}.json").write_text(json.dumps(card))
    for suffix in ("reference.npz", "tokenizer.json"):
        shutil.copy(source / f"shapes-tiny.{suffix}", repository / f"{slug}.{suffix}")
    for tower in ("visual", "textual"):
        shutil.copytree(source / f"shapes-tiny_{tower}", repository / f"{slug}_{tower}")
        config = repository / f"{slug}_{tower}" / "config.pbtxt"
        config.write_text(config.read_text().replace(f'"shapes-tiny_{tower}"', f'"{slug}_{tower}"'))


def test_switching_the_model_embeds_the_stored_images_again_without_downloading(tmp_path, test_model_repo):
    repository = tmp_path / "models"
    shutil.copytree(test_model_repo, repository)
    copy_model(test_model_repo, repository, "shapes-tiny-b")
    folder = tmp_path / "photos"
    write_folder(folder, n_per_class=2, seed=81)  # 24 images
    first = cli_env(tmp_path / "var", repository)
    assert run_cli("ingest", "--folder", str(folder), env=first).returncode == 0

    switched = {**first, "IMAGESEARCH_MODEL": "shapes-tiny-b"}
    before = run_cli("search", "a red circle", env=switched)
    assert before.returncode == 1 and "nothing has been embedded with it yet" in before.stderr
    assert "Traceback" not in before.stderr
    embedded = run_cli("ingest", "embed", env=switched)
    assert embedded.returncode == 0, embedded.stderr
    assert "embed: 24 embedded" in embedded.stdout  # every stored image, nothing downloaded or scanned
    assert "store: 24 images, 24 embedded, 0 pending" in embedded.stdout
    after = search(switched, "a red circle", k=5)
    assert len(after) == 5 and colour_shape_of(after[0]) == ("red", "circle")
    store = LocalStore(tmp_path / "var" / "store.sqlite3")
    for model in ("shapes-tiny", "shapes-tiny-b"):  # the first model's vectors stay: switching back is free
        counts = store.counts(model)
        assert (counts.embedded, counts.pending) == (24, 0), model
    again = run_cli("ingest", "embed", env=first)
    assert "embed: 0 embedded" in again.stdout


def test_a_download_writes_its_records_within_about_a_second_even_while_other_urls_are_slow(tmp_path, test_model_repo):
    """Records are written every ``DOWNLOAD_WRITE_BATCH`` images *or* every second: with one fast
    URL and three that take 20 s, the fast one's record is in the store long before the batch fills,
    so a kill then loses nothing that was downloaded."""
    items = shapes.dataset(n_per_class=1, seed=83)[:4]
    with ImageServer() as server:
        urls = [server.add("/fast.jpg", items[0].encode())]
        urls += [server.add_sequence(f"/slow-{i}.jpg", [Reply(200, item.encode(), body_delay_s=20)])
                 for i, item in enumerate(items[1:])]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        env = cli_env(tmp_path / "var", test_model_repo)
        state = LocalState(tmp_path / "var")
        process = start_cli("ingest", "download", "--urls", str(tmp_path / "urls.txt"), env=env)
        started = time.monotonic()
        kill_when(process, lambda: len(state.read()[0]) == 1, "while the slow URLs were still downloading", timeout=15)
        waited = time.monotonic() - started
    records, _, files = state.check_consistent()
    assert records == {hashlib.sha256(items[0].encode()).hexdigest()} and records <= files
    assert waited < 15  # the flush came from the clock: the batch of 64 never filled


def test_ingest_on_a_terminal_shows_progress_bars(tmp_path, test_model_repo):
    import fcntl
    import os
    import pty
    import struct
    import termios

    folder = tmp_path / "photos"
    write_folder(folder, n_per_class=2, seed=85)  # 24 images
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns, like a real one
    process = subprocess.Popen(command("ingest", "--folder", str(folder)), env=cli_env(tmp_path / "var", test_model_repo),
                               cwd=REPO, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(60) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert re.search(r"embed \(shapes-tiny\): 100%\|[^|]*\| 24/24", text), text[-2000:]  # a tqdm bar, complete
    assert f"scan {folder}" in text and "embed: 24 embedded" in text


def test_remove_by_url_folder_and_id_then_ingest_leaves_them_out_until_asked(tmp_path, test_model_repo):
    folder = tmp_path / "photos"
    items = write_folder(folder, n_per_class=1, seed=87)  # 12 images, in <colour>/ folders
    web = shapes.dataset(n_per_class=1, seed=89)[:3]
    with ImageServer() as server:
        urls = [server.add(f"/{i}.jpg", item.encode()) for i, item in enumerate(web)]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        env = cli_env(tmp_path / "var", test_model_repo)
        ingest = ["ingest", "--urls", str(tmp_path / "urls.txt"), "--folder", str(folder)]
        assert run_cli(*ingest, env=env).returncode == 0
        store = LocalStore(tmp_path / "var" / "store.sqlite3")
        assert store.counts("shapes-tiny").embedded == 15

        def ids(of) -> set[str]:
            return {hashlib.sha256(item.encode()).hexdigest() for item in of}

        red = ids(i for i in items if i.colour == "red")
        blue_circle = next(iter(ids(i for i in items if (i.colour, i.shape) == ("blue", "circle"))))
        for args, expected in ((["--url", urls[0]], "removed 1 images (1 files)"),
                               (["--source", f"folder:{folder / 'red'}"], f"removed {len(red)} images ({len(red)} files)"),
                               (["--id", blue_circle], "removed 1 images (1 files)")):
            done = run_cli("remove", *args, env=env)
            assert done.returncode == 0 and expected in done.stdout, done.stdout + done.stderr
        gone = ids(web[:1]) | red | {blue_circle}
        files = {p.stem for p in (tmp_path / "var" / "images").rglob("*.*")}
        assert files.isdisjoint(gone) and len(files) == 15 - len(gone)
        found = {r["id"] for r in search(env, "a red circle", k=15)}
        assert len(found) == 15 - len(gone) and found.isdisjoint(gone)

        again = run_cli(*ingest, env=env)  # the same sources: what was removed stays out
        assert "1 skipped (removed; use --retry-removed)" in again.stdout and f"removed {len(gone) - 1}" in again.stdout
        assert store.counts("shapes-tiny").images == 15 - len(gone) and server.hits["/0.jpg"] == 1

        # a removal killed after its store step (the records are gone, a file is not): run it again
        store.remove_images([hashlib.sha256(web[1].encode()).hexdigest()])
        rerun = run_cli("remove", "--url", urls[1], env=env)
        assert rerun.returncode == 0 and "removed 0 images (1 files)" in rerun.stdout, rerun.stdout + rerun.stderr

        back = run_cli(*ingest, "--retry-removed", env=env)
        assert back.returncode == 0, back.stderr
        counts = store.counts("shapes-tiny")
        assert (counts.images, counts.embedded, counts.pending) == (15, 15, 0)
        assert run_cli("remove", "--source", "disk:/x", env=env).returncode == 2
        assert "not an image id" in run_cli("remove", "--id", "nope", env=env).stderr


def test_ingest_embeds_what_is_downloaded_while_the_rest_is_still_downloading(tmp_path, test_model_repo):
    """Both stages at once: the embedder works on the stored records while a slow URL is still
    coming in (hashing and verifying overlap the encoder), and the last image is embedded too."""
    items = shapes.dataset(n_per_class=1, seed=86)[:5]
    with ImageServer() as server:
        urls = [server.add(f"/fast-{i}.jpg", item.encode()) for i, item in enumerate(items[:4])]
        urls.append(server.add_sequence("/slow.jpg", [Reply(200, items[4].encode(), body_delay_s=12)]))
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        process = start_cli("ingest", "--urls", str(tmp_path / "urls.txt"), env=cli_env(tmp_path / "var", test_model_repo))
        database, embedded = tmp_path / "var" / "store.sqlite3", 0
        deadline = time.monotonic() + 60
        while embedded < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if database.exists():
                try:
                    with contextlib.closing(sqlite3.connect(database)) as db:
                        embedded = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
                except sqlite3.OperationalError:  # the CLI is still creating its tables (the file comes first)
                    continue
        assert embedded == 4 and server.hits["/slow.jpg"] == 1 and process.poll() is None  # the slow one still downloading
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "download: 5 downloaded" in output and "embed: 5 embedded" in output, output
