"""How much a negative should weigh (IMAGESEARCH_NEGATIVE_WEIGHT, issue 31), measured with the
trained test model (tests/support/test_model.py) on its coloured shapes, through the search service.

    .venv/bin/python -m bench.bench_negative_weight

Each task keeps one attribute and drops another: "red things that are not circles", for every colour
and shape (12 tasks). The right answers are the images of that colour and the two other shapes. It is
asked in two ways: by text (the query "red", the negative "circle"), and by example images (positive_ids:
one red circle, one red square and one red triangle; negative_ids: another red circle). For each
weight: the share of right answers among the top 2n (n images per class), and the share of the query's
colour among them (what a too heavy negative loses).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from bench.common import cpu_description, save_results
from imagesearch.config import Settings
from imagesearch.encoders import make_encoder
from imagesearch.preprocess import prepare
from imagesearch.records import ImageRecord
from imagesearch.search import SearchService
from imagesearch.search.query import Examples
from imagesearch.stores.local import LocalStore
from tests.support import shapes
from tests.support.test_model import SLUG, ensure_test_model

PER_CLASS = 10
WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]


def main() -> None:
    repository = ensure_test_model()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), model_repository=repository, model=SLUG, max_k=100)
        encoder = make_encoder(settings)
        items = shapes.dataset(n_per_class=PER_CLASS, seed=77)  # not the training set's seed
        ids = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(len(items))]
        store = LocalStore(Path(tmp) / "store.sqlite3")
        store.upsert_images([ImageRecord(id=i, urls=[f"https://example.com/{n}.jpg"], sources=["url"], width=96, height=96,
                                         format="jpeg", bytes=1) for n, i in enumerate(ids)])
        store.set_vectors(SLUG, ids, encoder.encode_images(np.stack([prepare(item.encode("JPEG"), encoder.card)
                                                                     for item in items])))
        of = {i: (item.colour, item.shape) for i, item in zip(ids, items, strict=True)}
        print(f"CPU: {cpu_description()}; the test model, {len(items)} shape images, 12 tasks, top {2 * PER_CLASS}", flush=True)
        rows = []
        for weight in WEIGHTS:
            service = SearchService(settings.model_copy(update={"negative_weight": weight}), encoder=encoder, store=store)
            for asked in ("text", "example images"):
                right, colour = [], []
                for c in shapes.COLOURS:
                    for s in shapes.SHAPES:
                        found = [of[r.id] for r in ask(service, asked, c, s, of).results]
                        right.append(np.mean([(fc, fs != s) == (c, True) for fc, fs in found]))
                        colour.append(np.mean([fc == c for fc, _ in found]))
                rows.append({"negative_weight": weight, "asked_by": asked, "right_pct": 100 * float(np.mean(right)),
                             "query_colour_pct": 100 * float(np.mean(colour))})
                print(f"  weight {weight:4}  {asked:<15} right {rows[-1]['right_pct']:5.1f}%  "
                      f"colour kept {rows[-1]['query_colour_pct']:5.1f}%", flush=True)
        store.close()
    save_results("bench_negative_weight", rows, parameters={"model": SLUG, "images": len(items), "tasks": 12,
                                                             "k": 2 * PER_CLASS})


def ask(service: SearchService, asked: str, colour: str, shape: str, of: dict[str, tuple[str, str]]):
    """``colour`` things that are not ``shape``s, by words or by example images."""
    if asked == "text":
        return service.search_text(colour, 2 * PER_CLASS, examples=Examples(negative=(shape,)))
    firsts = {c: next(i for i, found in of.items() if found == c) for c in sorted(set(of.values()))}
    unlike = [i for i, found in of.items() if found == (colour, shape)][1]  # another one of the shape dropped
    return service.search_examples(Examples(positive_ids=tuple(firsts[(colour, s)] for s in shapes.SHAPES),
                                            negative_ids=(unlike,)), 2 * PER_CLASS)


if __name__ == "__main__":
    main()
