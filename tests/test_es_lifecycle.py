"""Elasticsearch promises no other test held: `imagesearch index swap --force` with images still
pending, and a removal killed between its tombstone and the vectors, then run again, finishing the
job. A real node (tests/support/es_node.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagesearch.stores.elasticsearch import ElasticsearchStore
from tests.support.store_data import image_id, record, unit_vectors
from tests.test_es_store import es_settings, index_cli_env  # noqa: F401 - index_cli_env: a fixture

MODEL = "shapes-tiny"  # the test model's slug (64-d): the index command reads the model card


def test_index_swap_force_moves_searches_while_images_are_still_pending(index_cli_env, capsys):  # noqa: F811
    from imagesearch.cli import main
    from imagesearch.config import get_settings

    store = ElasticsearchStore(get_settings())
    store.upsert_images([record(i) for i in range(3)])
    store.set_vectors(MODEL, [image_id(i) for i in range(3)], unit_vectors(3, 64, seed=5))
    old = store.indices.alias_target(store.indices.aliases(MODEL)[0])
    assert main(["index", "rebuild", "--index-type", "hnsw"]) == 0
    new = json.loads((out := capsys.readouterr().out)[out.index("{"):])["write_index"]
    rebuilt = unit_vectors(1, 64, seed=6)
    store.set_vectors(MODEL, [image_id(0)], rebuilt)  # one of three embedded into the new index

    assert main(["index", "swap"]) == 2 and "2 image(s) still pending" in capsys.readouterr().out
    assert store.indices.alias_target(store.indices.aliases(MODEL)[0]) == old  # refused: searches stay

    assert main(["index", "swap", "--force"]) == 0
    out = capsys.readouterr().out
    assert f"searches for {MODEL} now read {new}" in out
    status = json.loads(out[out.index("{"):])
    assert (status["search_index"], status["write_index"], status["rebuilding"], status["pending"]) == (new, new, False, 2)
    assert not store.es.indices.exists(index=old)
    hits = store.search(MODEL, rebuilt[0], 5)  # searches read the new index: only what it holds so far
    assert [h.id for h in hits] == [image_id(0)] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {r.id for r in store.pending(MODEL, 10)} == {image_id(1), image_id(2)}  # the embed worker fills the rest
    store.close()


class Killed(BaseException):
    """The process dies here (not an error the store could catch and retry)."""


def test_a_removal_killed_between_the_tombstone_and_the_vectors_finishes_when_run_again(es_node, tmp_path):
    store = ElasticsearchStore(es_settings(es_node, tmp_path))
    records = [record(i, urls=[f"https://example.com/{i}.jpg"]) for i in range(4)]
    vectors = unit_vectors(4, 16, seed=41)
    store.upsert_images(records)
    store.set_vectors("removal-model", [r.id for r in records], vectors)
    store.refresh()
    vector_index = store.indices.alias_target(store.indices.aliases("removal-model")[0])

    # The removal's writes, in order: tombstones, records, vectors. The kill comes before the third.
    real_bulk, calls = store.client.bulk, []

    def bulk(actions, ignore_status=()):
        calls.append(actions)
        if len(calls) == 3:
            raise Killed
        return real_bulk(actions, ignore_status=ignore_status)

    store.client.bulk = bulk
    with pytest.raises(Killed):
        store.remove_images([image_id(1)])
    store.client.bulk = real_bulk
    assert [a["_index"] for a in calls[2]] == [vector_index]  # killed before the vectors' delete

    store.refresh()
    assert store.get(image_id(1)) is None and store.removed_ids([image_id(1)]) == {image_id(1)}
    assert store.es.exists(index=vector_index, id=image_id(1))  # the vector document is left over
    assert image_id(1) not in {h.id for h in store.search("removal-model", vectors[1], 4)}  # never shown meanwhile

    # Run again as `imagesearch remove --url` does: the tombstone still finds the id, and this time all goes.
    ids = store.find_ids(url="https://example.com/1.jpg")
    assert ids == [image_id(1)]
    store.remove_images(ids)
    store.refresh()
    assert not store.es.exists(index=vector_index, id=image_id(1))
    assert store.get_vector("removal-model", image_id(1)) is None
    counts = store.counts("removal-model")
    assert (counts.images, counts.embedded, counts.pending) == (3, 3, 0)
    assert store.removed_urls(["https://example.com/1.jpg"]) == {"https://example.com/1.jpg"}
    assert [h.id for h in store.search("removal-model", vectors[1], 4)] == [
        records[i].id for i in np.argsort(-(vectors @ vectors[1])) if i != 1]
    store.close()
