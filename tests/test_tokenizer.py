"""The torch-free tokenizer gives exactly open_clip's token ids."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest

from imagesearch.model_card import load_card
from imagesearch.tokenizer import Tokenizer


def corpus() -> list[str]:
    fixed = [
        "", " ", "   \t\n ", "a red circle", "A Dog running on the BEACH!!", "naïve café crème brûlée",
        "日本語のテキストと漢字", "한국어 문장", "Привет, мир", "مرحبا بالعالم", "emoji 😀👍🏽🐶🏖️ mixed",
        "it's we're THEY'LL I'd you've", "<start_of_text>hi", "a<end_of_text>b", "<<start_of_text>",
        "?<end_of_text>?", "&amp;lt; &quot;quoted&quot; &#39;x&#39;", "tab\tnew\nline    spaces",
        "1234567890 3.14159 1e-9", "http://example.com/a?b=c&d=e", "C++ & C# — “smart quotes” ‘x’ …",
        "mojibake: Ã©tÃ© donâ€™t", "zero\u200bwidth\u00a0nbsp", "ALL CAPS SHOUTING", "x" * 500,
        "a very long caption about many things " * 30, "🙂" * 100, "ß ẞ ǅ ﬁ ﬀ", "\u0000\u0001 control",
    ]
    rng = random.Random(1234)
    alphabet = string.printable + "éèàüößçñ漢字かなカナ한국어😀🎉🐶🏖️αβγδ—–…«»“”‘’\u200b\u00a0\u0301"
    words = ["photo", "of", "a", "dog", "cat", "beach", "sunset", "red", "blue", "circle", "square", "city", "night"]
    generated = []
    for _ in range(1200):
        if rng.random() < 0.5:
            generated.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 150))))
        else:
            generated.append(
                rng.choice([" ", "  ", ", ", "! ", "\n"]).join(
                    rng.choice(words).upper() if rng.random() < 0.2 else rng.choice(words) for _ in range(rng.randint(1, 100))
                )
            )
    return fixed + generated


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    from imagesearch.export.sources.open_clip import write_tokenizer

    path = tmp_path_factory.mktemp("tok") / "clip.tokenizer.json"
    return Tokenizer(write_tokenizer("ViT-B-32", 77, path), path)


def test_identical_to_open_clip_on_a_varied_corpus(clip_tokenizer):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    texts = corpus()
    assert len(texts) == 1229  # 29 hand-picked + 1200 generated (seeded)
    ours = clip_tokenizer(texts)
    theirs = reference(texts).numpy()
    mismatches = [t for t, a, b in zip(texts, ours, theirs, strict=True) if not np.array_equal(a, b)]
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:3]!r}"
    assert ours.dtype == np.int64 and ours.shape == (len(texts), 77)


def test_over_long_text_is_truncated_with_end_token(clip_tokenizer):
    ids = clip_tokenizer(["word " * 200])[0]
    assert ids[0] == clip_tokenizer.spec.sot_id and ids[-1] == clip_tokenizer.spec.eot_id and (ids != 0).all()


def test_test_model_tokenizer_matches_its_open_clip_context_length(test_model_repo):
    card = load_card(test_model_repo, "shapes-tiny")
    tokenizer = Tokenizer.from_card(card, test_model_repo)
    assert tokenizer(["a red circle"]).shape == (1, card.context_length)
