"""BLIP-2 -> the export's two-tower contract: the image-text contrastive (ITC) head of Hugging Face
transformers' ``Blip2ForImageTextRetrieval``.

An image becomes one L2-normalized embedding per Q-Former query ([B, 32, 256] for
Salesforce/blip2-itm-vit-g), a text one embedding ([B, 256]: the projected [CLS] output), and an
image scores a text by the best of its queries, exactly as the model's own ITC logits. The towers
below reuse the model's modules in the order its ``forward`` runs them, so transformers' torch
outputs are the parity reference. The tokenizer is the model's own BERT WordPiece tokenizer, saved
as a ``tokenizers`` file so the services need neither torch nor transformers.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoImageProcessor, AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval

from imagesearch.export.source import ExportError, ExportOptions, Source, hub_unreachable
from imagesearch.model_card import TokenizerSpec

ARCHITECTURE = "blip2"
DEFAULT_CONTEXT_LENGTH = 64  # tokens per text ([CLS] ... [SEP]); longer texts are cut like transformers' truncation
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


class Blip2Visual(nn.Module):
    """uint8 [B,H,W,3] -> BLIP-2's normalization -> ViT -> Q-Former queries -> [B,Q,D], normalized."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(self, model, mean, std):
        super().__init__()
        self.vision_model, self.qformer = model.vision_model, model.qformer
        self.query_tokens, self.vision_projection = model.query_tokens, model.vision_projection
        self.register_buffer("offset", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).float() - self.offset) / self.scale
        image_embeds = self.vision_model(pixel_values=x).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.qformer(
            query_embeds=self.query_tokens.expand(image_embeds.shape[0], -1, -1),
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
        ).last_hidden_state
        return nn.functional.normalize(self.vision_projection(queries), dim=-1)


class Blip2Textual(nn.Module):
    """int64 tokens [B,L], padded with ``pad_id`` -> Q-Former text -> projected [CLS] -> [B,D], normalized."""

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.embeddings, self.qformer, self.text_projection = model.embeddings, model.qformer, model.text_projection
        self.pad_id = pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.pad_id).long()  # what the tokenizer's attention_mask says
        hidden = self.qformer(query_embeds=self.embeddings(input_ids=tokens), query_length=0,
                              attention_mask=mask).last_hidden_state
        return nn.functional.normalize(self.text_projection(hidden[:, 0, :]), dim=-1)


def _load(options: ExportOptions):
    """(model, tokenizer, image processor) from a folder or hub name, or random weights of a config."""
    given = options.pretrained
    random_weights = given.lower() in ("", "none", "random")
    folder = Path(options.model_config) if random_weights and options.model_config else Path(given)
    if random_weights and not options.model_config:
        raise ExportError(
            "BLIP-2 with random weights still needs its tokenizer and configuration: pass --model-config FOLDER, "
            "a folder with config.json and the tokenizer files (for instance a copy of Salesforce/blip2-itm-vit-g "
            "without its weights)")
    local = folder.exists()
    if not local:
        if "/" not in given or given.startswith((".", "/")):
            raise ExportError(f"BLIP-2 checkpoint folder {given} does not exist")
        why = hub_unreachable(urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co")
        if why:
            raise ExportError(
                f"could not get the BLIP-2 weights {given}: {why}. Download the model folder elsewhere "
                f"(`huggingface-cli download {given}`, about 4.6 GB in float32 for blip2-itm-vit-g) and pass "
                "its path: `imagesearch export --family blip2 --pretrained /path/to/folder` (or set HF_HUB_OFFLINE=1 "
                "to use the local Hugging Face cache)")
    source = str(folder) if local else given
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        processor = AutoImageProcessor.from_pretrained(source)
        if random_weights:
            config = Blip2Config.from_pretrained(source)
            config._attn_implementation = "eager"
            model = Blip2ForImageTextRetrieval(config)
        else:
            model = Blip2ForImageTextRetrieval.from_pretrained(source, dtype=torch.float32, attn_implementation="eager")
    except Exception as exc:
        raise ExportError(f"could not load BLIP-2 from {source}: {type(exc).__name__}: {exc}") from exc
    if model.config.image_token_index is not None:
        raise ExportError(f"{source} is a BLIP-2 whose text input carries image tokens; only the retrieval "
                          "(ITC) checkpoints such as Salesforce/blip2-itm-vit-g are supported")
    return model.float().eval(), tokenizer, processor, transformers.__version__


def blip2_source(options: ExportOptions) -> Source:
    model, tokenizer, processor, version = _load(options)
    size = dict(processor.size)  # BlipImageProcessor: height and width, resized without keeping the ratio
    height, width = size.get("height"), size.get("width")
    if height is None or height != width:
        raise ExportError(f"BLIP-2 image processor size {size}: only square height x width inputs are supported")
    image_size = int(height)
    mean = tuple(float(v) for v in processor.image_mean)
    std = tuple(float(v) for v in processor.image_std)
    pad_id = int(tokenizer.pad_token_id or 0)
    context_length = min(DEFAULT_CONTEXT_LENGTH, int(model.config.qformer_config.max_position_embeddings))

    def write_tokenizer(path: Path) -> TokenizerSpec:
        tokenizer.backend_tokenizer.save(str(path))
        return TokenizerSpec(kind="hf", file=path.name, context_length=context_length, clean="none", pad_id=pad_id)

    return Source(
        family="blip2", architecture=ARCHITECTURE,
        visual=Blip2Visual(model, mean, std).eval(), textual=Blip2Textual(model, pad_id).eval(),
        image_size=image_size, mean=mean, std=std,  # type: ignore[arg-type]
        interpolation=_PIL_RESAMPLE.get(int(getattr(processor, "resample", 3)), "bicubic"), resize_mode="squash",
        fill_color=0, context_length=context_length, vocab_size=int(model.config.qformer_config.vocab_size),
        write_tokenizer=write_tokenizer, versions={"exported_with": f"transformers {version}"}, pad_id=pad_id,
        tokenize=lambda texts: np.asarray(tokenizer(texts, padding="max_length", truncation=True,
                                                    max_length=context_length)["input_ids"], dtype=np.int64),
    )
