"""A tiny BLIP-2 retrieval model with random weights, saved as a transformers model folder.

It has the real model's architecture (ViT, Q-Former with cross-attention, ITC projections) at test
size: few layers, narrow widths, 4 queries, 32-pixel images, and a small BERT WordPiece vocabulary
(the real one, bert-base-uncased's, needs the model hub). ``imagesearch export --family blip2
--pretrained FOLDER`` reads it exactly like a downloaded checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "a",
    "an",
    "the",
    "of",
    "on",
    "in",
    "with",
    "and",
    "at",
    "photo",
    "image",
    "picture",
    "dog",
    "cat",
    "running",
    "beach",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "star",
    "city",
    "skyline",
    "night",
    "lights",
    "very",
    "long",
    "caption",
    "café",
    "naïve",
    "tokyo",
    "東",
    "京",
    "☕",
]
QUERIES = 4
IMAGE_SIZE = 32


def vocabulary() -> list[str]:
    """Special tokens, single characters and their word-piece forms, and a few whole words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation) + list("éèàçïöü東京☕—")
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits + "éèàçïöü"]
    return list(dict.fromkeys(SPECIAL + chars + pieces + WORDS))


def build(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval, BlipImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    config = Blip2Config(
        # initializer_range: transformers' default for the vision tower (1e-10) gives every image the same embedding
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": 8, "initializer_range": 0.02},
        qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "vocab_size": len(vocab), "max_position_embeddings": 64, "cross_attention_frequency": 1,
                        "use_qformer_text_input": True},  # the retrieval checkpoints have the text feed-forward
        num_query_tokens=QUERIES, image_text_hidden_size=16,
    )
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(folder)
    return folder
