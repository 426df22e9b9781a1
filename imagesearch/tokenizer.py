"""Text -> token ids without torch, identical to open_clip's tokenizer for the model.

* ``clip_bpe`` (the CLIP models): open_clip's text cleaning and word split are reproduced here
  with the same ``ftfy``/``regex`` calls; the byte-level BPE itself runs in Hugging Face
  ``tokenizers`` from the vocabulary that ``imagesearch export`` wrote.
* ``hf`` (models with a Hugging Face tokenizer: SigLIP, the multilingual CLIPs' XLM-RoBERTa, NLLB):
  the exported ``tokenizer.json`` after open_clip's cleaning, truncated and padded to the context
  length as open_clip's ``HFTokenizer`` has transformers do it. BLIP-2's BERT WordPiece tokenizer is
  one too, with no cleaning (``clean="none"``) as transformers runs it.
"""

from __future__ import annotations

import html
import itertools
import string
from collections.abc import Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex
from tokenizers import Tokenizer as HFTokenizer

from imagesearch.model_card import ModelCard, TokenizerSpec

CLIP_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# open_clip's word pattern (IGNORECASE), special tokens first.
CLIP_WORD_PATTERN = regex.compile(
    "|".join(CLIP_SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def _whitespace_clean(text: str) -> str:
    # str.split's whitespace (it includes the separators \x1c-\x1f, which regex's \s does not), as open_clip
    return " ".join(text.split())


def clean_text(text: str, mode: str) -> str:
    """open_clip's ``get_clean_fn(mode)``; ``none`` leaves the text to the tokenizer's normalizer."""
    if mode == "none":
        return text
    text = _basic_clean(text)
    if mode == "lower":
        return _whitespace_clean(text).lower()
    if mode == "whitespace":
        return _whitespace_clean(text)
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return _whitespace_clean(text)
    raise ValueError(f"unknown text cleaning mode {mode!r}")


class Tokenizer:
    def __init__(self, spec: TokenizerSpec, tokenizer_file: Path):
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"tokenizer file {tokenizer_file} is missing; re-run `imagesearch export`")
        self.spec = spec
        self.context_length = spec.context_length
        self._hf = HFTokenizer.from_file(str(tokenizer_file))
        if spec.kind == "hf":  # as transformers' padding="max_length", truncation=True
            self._hf.enable_truncation(max_length=spec.context_length, direction=spec.truncation_side)
            self._hf.enable_padding(length=spec.context_length, pad_id=spec.pad_id, direction=spec.padding_side)

    @classmethod
    def from_card(cls, card: ModelCard, repository: Path) -> Tokenizer:
        return cls(card.tokenizer, Path(repository) / card.tokenizer.file)

    @property
    def _sot(self) -> int:
        assert self.spec.sot_id is not None, "a CLIP BPE tokenizer spec names its start token"
        return self.spec.sot_id

    @property
    def _eot(self) -> int:
        assert self.spec.eot_id is not None, "a CLIP BPE tokenizer spec names its end token"
        return self.spec.eot_id

    def _clip_ids(self, text: str) -> list[int]:
        words = CLIP_WORD_PATTERN.findall(clean_text(text, self.spec.clean))
        ids: list[int] = []
        for is_special, run in itertools.groupby(words, key=lambda w: w in CLIP_SPECIAL_TOKENS):
            group = list(run)
            if is_special:  # open_clip maps a literal special token in the text to its id
                ids.extend(self._sot if w == CLIP_SPECIAL_TOKENS[0] else self._eot for w in group)
            else:
                ids.extend(self._hf.encode(group, is_pretokenized=True, add_special_tokens=False).ids)
        return ids

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        """Texts -> int64 [B, context_length], padded with zeros like open_clip."""
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        if self.spec.kind == "clip_bpe":
            for row, text in enumerate(texts):
                ids = [self._sot, *self._clip_ids(text), self._eot]
                if len(ids) > self.context_length:
                    ids = ids[: self.context_length]
                    ids[-1] = self._eot
                out[row, : len(ids)] = ids
            return out
        encodings = self._hf.encode_batch([clean_text(t, self.spec.clean) for t in texts])
        out[:] = [e.ids for e in encodings]
        if self.spec.strip_sep_token and self.spec.sep_id is not None:
            out[out == self.spec.sep_id] = 0  # open_clip writes 0, whatever the pad id
        return out
