"""One query vector from a query's positives and negatives, the same for every store.

The positives are the query's own vector (from its text, image or image id) and those of the
indexed images it should look like; the negatives are the vectors of the texts and indexed images it
should not. The query searches with the normalized mean of the positives minus ``negative_weight``
times the mean of the negatives (Rocchio's relevance feedback, as rclip's and Marqo's negative
prompts and Qdrant's recommend API do it): means, so that adding examples does not shift the balance
between the two sides; one weight for the whole negative side, a setting (docs/api.md says how its
default was chosen).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imagesearch.search.query import QueryError


def blend(positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray], negative_weight: float) -> np.ndarray:
    """normalize(mean(positives) - negative_weight * mean(negatives)), as float32. ``QueryError``
    when nothing is left (the negatives cancel the positives out)."""
    if not positives:
        raise ValueError("a blended query needs at least one positive vector")
    vector = np.mean(np.asarray(positives, np.float64), axis=0)
    if len(negatives):
        vector -= negative_weight * np.mean(np.asarray(negatives, np.float64), axis=0)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise QueryError("the negatives cancel the positives out: nothing is left to search for")
    return (vector / norm).astype(np.float32)
