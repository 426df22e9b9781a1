"""The label vectors: each label of the vocabulary embedded by a model's text tower, once per model
and vocabulary. They are kept in the data folder (``<data dir>/tags/``), keyed by the model, its
exported files, the template and the labels, so that a restart or another ingest process reads them
instead of loading the text tower again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from imagesearch.config import Settings
from imagesearch.model_card import ModelCard
from imagesearch.tags.vocabulary import Vocabulary

log = logging.getLogger("imagesearch.tags")


def labels_key(settings: Settings, card: ModelCard, vocabulary: Vocabulary) -> str:
    """What the label vectors depend on, as a hash: the model (its description and its text tower's
    file, which a re-export under the same slug replaces), the variant, the template and the labels."""
    textual = card.onnx_path(settings.model_repository, "textual", settings.model_variant) \
        if settings.model_variant in card.variants else None
    stat = textual.stat() if textual is not None and textual.is_file() else None
    identity = {"card": card.model_dump(mode="json"), "variant": settings.model_variant, "template": settings.tag_template,
                "labels": vocabulary.digest, "textual": [stat.st_size, stat.st_mtime_ns] if stat else None}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cache_path(settings: Settings, card: ModelCard, key: str) -> Path:
    return settings.data_dir / "tags" / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', card.slug)}-{key[:16]}.npy"


def label_vectors(settings: Settings, card: ModelCard, vocabulary: Vocabulary) -> np.ndarray:
    """[labels, dim] float32, L2-normalized: read from the cache, or embedded now (the text tower is
    loaded for this alone and closed again) and cached."""
    path = cache_path(settings, card, labels_key(settings, card, vocabulary))
    try:
        vectors = np.load(path)
        if vectors.shape == (len(vocabulary), card.dim):
            return vectors
    except (OSError, ValueError):  # not there yet (or unreadable): embedded again
        pass
    vectors = _embed(settings, card, vocabulary)
    _keep(path, vectors)
    return vectors


def _keep(path: Path, vectors: np.ndarray) -> None:
    """Write the file whole or not at all: another process may read it at any time."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            np.save(file, vectors)
        os.replace(partial, path)
    except OSError as exc:  # a full disk, a read-only folder: the next ingest embeds them again
        log.warning("cannot keep the label vectors in %s: %s", path.parent, exc)
        partial.unlink(missing_ok=True)


def _embed(settings: Settings, card: ModelCard, vocabulary: Vocabulary) -> np.ndarray:
    from imagesearch.encoders import make_encoder

    log.info("embedding %d tag labels with %s's text tower", len(vocabulary), card.slug)
    texts = [settings.tag_template.replace("{label}", label) for label in vocabulary.labels]
    encoder = make_encoder(settings.for_model(card.slug), card, towers=("textual",))
    try:  # in batches the encoder takes (Triton refuses more than its configured maximum)
        step = settings.text_batch_max
        return np.concatenate([encoder.encode_texts(texts[i : i + step]) for i in range(0, len(texts), step)]).astype(np.float32)
    finally:
        encoder.close()
