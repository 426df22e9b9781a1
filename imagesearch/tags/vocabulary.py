"""The tag vocabulary: the labels images may be tagged with, from the file shipped beside this module
or from the operator's (``IMAGESEARCH_TAG_VOCABULARY``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imagesearch.records import MAX_TAG_CHARS, tag_key

DEFAULT_VOCABULARY = Path(__file__).with_name("vocabulary.txt")


class VocabularyError(ValueError):
    """The vocabulary file cannot be read or has no usable label (the message says which line)."""


@dataclass(frozen=True)
class Vocabulary:
    labels: tuple[str, ...]  # as the stores hold tags (records.tag_key), in the file's order, each once
    source: Path

    @property
    def digest(self) -> str:
        """What the labels are, as a hash: a new vocabulary gets new label vectors and new tags."""
        return hashlib.sha256("\n".join(self.labels).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.labels)


def load_vocabulary(path: Path | None = None) -> Vocabulary:
    """The labels of ``path`` (None: the shipped vocabulary): one per line, blank lines and lines
    starting with ``#`` skipped, compared in lower case with single spaces; a repeated label counts once."""
    source = Path(path) if path is not None else DEFAULT_VOCABULARY
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read the tag vocabulary {source}: {exc}") from exc
    labels: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        label = tag_key(line)
        if not label or label.startswith("#"):
            continue
        if "," in label or len(label) > MAX_TAG_CHARS:  # the tag filter splits on commas
            raise VocabularyError(
                f"{source}:{number}: a label has no comma and at most {MAX_TAG_CHARS} characters: {line.strip()[:120]!r}"
            )
        labels[label] = None
    if not labels:
        raise VocabularyError(f"the tag vocabulary {source} has no label (one per line)")
    return Vocabulary(tuple(labels), source)
