"""What every model family gives the export (``Source``), what the user asks of it (``ExportOptions``),
and how it fails (``ExportError``).

Free of torch at import time, so ``imagesearch export`` can check its arguments (``--help``,
``--if-missing``) without loading it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imagesearch.config import DEFAULT_MODEL
from imagesearch.model_card import Family, TokenizerSpec

if TYPE_CHECKING:  # only named in annotations: importing this module must not import torch
    import numpy as np
    from torch import nn


class ExportError(RuntimeError):
    """The export cannot be done or did not pass its checks; the message says why."""


@dataclass
class ExportOptions:
    model: str = DEFAULT_MODEL  # the open_clip architecture (ignored for BLIP-2)
    pretrained: str = "none"
    family: Family = "open_clip"
    slug: str = ""
    # open_clip: an extra model config (JSON file or folder); BLIP-2 with random weights: a folder
    # with config.json and the tokenizer files
    model_config: Path | None = None
    # open_clip architectures naming a Hugging Face text model or tokenizer (hf_model_name,
    # hf_tokenizer_name): a local folder with its config.json and tokenizer files, instead of the hub
    text_model: Path | None = None
    fp16: bool = False
    int8: bool = False
    parity_batch: int = 4
    tokenizer: bool = True  # False: skip tokenizer assets (parity checks of models whose tokenizer needs the hub)


@dataclass
class Source:
    """A loaded model as the export needs it, whatever library it came from: the two towers (torch
    modules with the ONNX contract: uint8 pixels / token ids in, normalized embeddings out), what
    the shared preprocessing must do for it, and how to write its tokenizer."""

    family: str
    architecture: str
    visual: nn.Module
    textual: nn.Module
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    fill_color: int
    context_length: int
    vocab_size: int
    write_tokenizer: Callable[[Path], TokenizerSpec] | None  # None: parity on random token ids
    versions: dict[str, str]  # {"open_clip_version": ..., "exported_with": ...}
    # The id the text tower masks out (transformers towers compute their attention mask from it);
    # None: the tower reads every position (open_clip's own text transformer).
    pad_id: int | None = None
    # The family's own tokenizer (texts -> int64 ids): the exported tokenizer must give the same ids.
    tokenize: Callable[[list[str]], np.ndarray] | None = None


def hub_unreachable(host: str) -> str | None:
    """Why ``host`` cannot be reached now (one quick connect), or None.

    The hub clients retry a dead connection for most of a minute; one quick connect says the same.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None  # the user said: use the local cache only
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f"the model hub ({host}) is unreachable: {exc}"
    return None
