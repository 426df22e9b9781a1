"""``Tagger``: the labels of the vocabulary each image keeps, from its embedding.

How a label is chosen (docs/tags.md): the image's cosine to each label's vector (for a model with
several vectors per image, BLIP-2, the best of them) is standardized over the vocabulary, as
(cosine - mean) / standard deviation; the labels at least ``tag_min_score`` standard deviations above
the image's mean are kept, at most ``tags_per_image``, the best first. A fixed cosine would not do:
CLIP's cosines to texts lie close together, and where they lie differs by model and by image. A
softmax over the vocabulary makes the labels compete, so an image's second true label (a colour
beside an object) loses to the first; the standardized score judges each label on its own, and needs
no logit scale (the exported model carries none). tests/test_tags.py measures them on the test model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from imagesearch.config import Settings
from imagesearch.model_card import ModelCard, load_card
from imagesearch.stores import VectorStore
from imagesearch.tags.labels import label_vectors, labels_key
from imagesearch.tags.vocabulary import Vocabulary, load_vocabulary

SCORING = "z-over-vocabulary-1"  # the rule above; a new rule tags every image again


@dataclass
class Tagger:
    model: str  # the slug of the model whose image vectors it reads
    vocabulary: Vocabulary
    vectors: np.ndarray  # [labels, dim], L2-normalized
    per_image: int
    min_score: float
    key: str  # which tagging this is (model, labels, template, settings): records tagged otherwise are tagged again

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """[N, labels]: each image's standardized score for each label (the rule above)."""
        cosines = np.asarray(vectors, np.float32) @ self.vectors.T
        if cosines.ndim == 3:  # [N, Q, labels]: the best of the image's vectors
            cosines = cosines.max(axis=1)
        spread = np.maximum(cosines.std(axis=1, keepdims=True), 1e-6)
        return (cosines - cosines.mean(axis=1, keepdims=True)) / spread

    def tag(self, vectors: np.ndarray) -> list[list[str]]:
        """Each image's tags, best first, from its embedding ([N, D] or [N, Q, D])."""
        if not len(vectors):
            return []
        scores = self.scores(vectors)
        best = np.argsort(-scores, axis=1, kind="stable")[:, : self.per_image]
        return [[self.vocabulary.labels[j] for j in row if scores[n, j] >= self.min_score] for n, row in enumerate(best)]

    def write(self, store: VectorStore, ids: list[str], vectors: np.ndarray) -> None:
        """Tag the images ``ids`` from their embeddings and store the tags."""
        if ids:
            store.set_tags(dict(zip(ids, self.tag(vectors), strict=True)), self.key)


def tagging_model(settings: Settings) -> str:
    """The model that tags: the default one (the first of IMAGESEARCH_MODELS, or IMAGESEARCH_MODEL)."""
    return settings.model_slugs[0]


def make_tagger(settings: Settings, card: ModelCard | None = None) -> Tagger:
    """The tagger of the default model (or ``card``'s) with the configured vocabulary; its label
    vectors read from the cache in the data folder, or embedded now."""
    card = card or load_card(settings.model_repository, tagging_model(settings))
    vocabulary = load_vocabulary(settings.tag_vocabulary)
    labels = labels_key(settings, card, vocabulary)
    key = hashlib.sha256(f"{labels} {settings.tags_per_image} {settings.tag_min_score!r} {SCORING}".encode()).hexdigest()[:16]
    return Tagger(card.slug, vocabulary, label_vectors(settings, card, vocabulary), settings.tags_per_image,
                  settings.tag_min_score, key)
