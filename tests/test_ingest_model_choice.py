"""`imagesearch ingest --model SLUG` with two models configured (IMAGESEARCH_MODELS): only the named
model embeds; the other's queue is left for a later run, which embeds only that model. The default
model (the first) alone tags, when it embeds."""

from __future__ import annotations

import os

from imagesearch.config import Settings
from imagesearch.stores import make_store
from tests.support.cli import cli_env, run_cli
from tests.support.search_api import make_shapes, write_folder

SECOND = "shapes-tiny-b"


def test_ingest_model_embeds_with_that_model_only(test_model_repo, tmp_path):
    # Two models in one repository, as `imagesearch export` twice makes it: the test model, and its
    # checkpoint exported again under a second slug.
    repository = tmp_path / "models"
    repository.mkdir()
    for entry in test_model_repo.iterdir():
        os.symlink(entry, repository / entry.name)
    trained = test_model_repo.parent
    exported = run_cli("export", "--model", "shapes-tiny", "--pretrained", str(trained / "checkpoint.pt"),
                       "--model-config", str(trained / "config"), "--slug", SECOND, "--repository", str(repository),
                       "--triton-kind", "cpu", env=cli_env(tmp_path / "var", repository))
    assert exported.returncode == 0, exported.stdout + exported.stderr

    env = cli_env(tmp_path / "var", repository, IMAGESEARCH_MODELS=f"shapes-tiny,{SECOND}", IMAGESEARCH_DECODE_WORKERS="1")
    folder = write_folder(tmp_path / "photos", make_shapes(1, seed=7))
    first = run_cli("ingest", "--folder", str(folder), "--model", SECOND, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "embed: 12 embedded" in first.stdout and "shapes-tiny:" not in first.stdout, first.stdout
    assert "tags (" not in first.stdout, first.stdout  # the second model does not tag
    store = make_store(Settings(data_dir=tmp_path / "var"))
    assert (store.counts(SECOND).embedded, store.counts(SECOND).pending) == (12, 0)
    assert store.tag_counts(10) == []
    assert (store.counts("shapes-tiny").embedded, store.counts("shapes-tiny").pending) == (0, 12)

    second = run_cli("ingest", "embed", "--model", "shapes-tiny", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "embed: 12 embedded" in second.stdout, second.stdout
    assert "tags (shapes-tiny, " in second.stdout and "12 images tagged as embedded" in second.stdout, second.stdout
    assert (store.counts("shapes-tiny").embedded, store.counts(SECOND).embedded) == (12, 12)
    store.close()
