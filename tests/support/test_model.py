"""The models the tests use, built once and kept in the test cache (``IMAGESEARCH_TEST_CACHE``).

- ``ensure_test_model()``: a tiny CLIP of open_clip's own architecture, trained here on coloured
  shapes (no model hub needed), exported like any model. The checkpoint is keyed by the training
  code and data, each exported repository by the export code too. The fp32 repository and the one
  with the int8 variant are separate, so a failing int8 gate fails only the tests about int8.
- ``ensure_export(name, options)``: any other export the tests share (ViT-B-32 with random weights,
  the tiny BLIP-2), keyed by its name and the export code: a change to the export builds it again.

Tests read these repositories and never change them (copy one to change it).
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from imagesearch.model_card import ModelCard
from imagesearch.preprocess import prepare
from tests.support import shapes

log = logging.getLogger(__name__)

SLUG = "shapes-tiny"
ARCH = "shapes-tiny"
IMAGE_SIZE = 32
EMBED_DIM = 64
CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "patch_size": 4, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TRAIN_THREADS = 2
TEMPLATES = ("a {} {}", "a photo of a {} {}", "{} {}", "an image of a {} {}")
DEFAULT_CACHE = Path(os.environ.get("IMAGESEARCH_TEST_CACHE", Path.home() / ".cache" / "imagesearch-tests"))


def _fingerprint(*sources: Path | str) -> str:
    digest = hashlib.sha256(json.dumps([CONFIG, TEMPLATES], sort_keys=True).encode())
    for source in sources:
        digest.update(Path(source).read_bytes() if isinstance(source, Path) else source.encode())
    return digest.hexdigest()[:12]


def _training_fingerprint() -> str:
    return _fingerprint(Path(shapes.__file__), inspect.getsource(train), inspect.getsource(pixels_for))


def _export_fingerprint(*extra_sources: Path) -> str:
    """Every source file of the export (its modules and the model description it writes)."""
    import imagesearch.export
    from imagesearch import model_card

    export_dir = Path(str(imagesearch.export.__file__)).parent
    return _fingerprint(*sorted(export_dir.rglob("*.py")), Path(str(model_card.__file__)), *extra_sources)


def pixels_for(images: list[shapes.ShapeImage]) -> np.ndarray:
    """The same bytes -> pixels path as ingest: JPEG round trip, then our preprocessing."""
    # Only the fields preprocessing reads.
    card = ModelCard.model_construct(image_size=IMAGE_SIZE, resize_mode="shortest", interpolation="bicubic",  # type: ignore[call-arg]
                                     fill_color=0)
    return np.stack([prepare(img.encode("JPEG"), card) for img in images])


def train(checkpoint: Path, steps: int = 700, seed: int = 0) -> dict:
    """Train the tiny model: image embeddings classify against caption embeddings (CLIP-style)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from imagesearch.export.sources.open_clip import VisualTower

    torch.manual_seed(seed)
    # The same thread count on every machine (how sums are split changes the float results) and
    # deterministic kernels: the weights then differ between machines only by their instruction sets.
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    config_dir = checkpoint.parent / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(config_dir)
    model = open_clip.create_model(ARCH, pretrained=None)
    tokenizer = open_clip.get_tokenizer(ARCH)
    cfg = open_clip.get_model_preprocess_cfg(model)
    visual = VisualTower(model, cfg["mean"], cfg["std"])

    train_set = shapes.dataset(n_per_class=600, seed=seed + 1)
    pixels = torch.from_numpy(pixels_for(train_set))
    labels = torch.tensor([shapes.CLASSES.index((s.colour, s.shape)) for s in train_set])
    prompts = [[t.format(c, s) for t in TEMPLATES] for c, s in shapes.CLASSES]
    tokens = tokenizer([p for group in prompts for p in group]).view(len(shapes.CLASSES), len(TEMPLATES), -1)

    # Auxiliary colour and shape heads on both towers (training aid only, not exported): without them
    # training can settle where one colour's three captions share one embedding and shape is lost.
    n_colours, n_shapes = len(shapes.COLOURS), len(shapes.SHAPES)
    heads = torch.nn.ModuleDict({
        "image": torch.nn.Linear(EMBED_DIM, n_colours + n_shapes),
        "text": torch.nn.Linear(EMBED_DIM, n_colours + n_shapes),
    })
    class_colour = torch.tensor([list(shapes.COLOURS).index(c) for c, _ in shapes.CLASSES])
    class_shape = torch.tensor([shapes.SHAPES.index(s) for _, s in shapes.CLASSES])

    def aux_loss(head: str, embeddings, classes) -> torch.Tensor:
        out = heads[head](embeddings)
        return (F.cross_entropy(out[:, :n_colours], class_colour[classes])
                + F.cross_entropy(out[:, n_colours:], class_shape[classes]))

    optimizer = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=3e-3, weight_decay=0.05)
    # Warm up, then decay to zero: the last steps settle instead of bouncing at a high learning rate.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start, loss_value = time.monotonic(), float("nan")
    # A fixed number of steps (not a time budget) so the model is the same on a busy or idle machine.
    for _ in range(steps):
        idx = torch.randint(0, len(pixels), (128,), generator=generator)
        template = torch.randint(0, len(TEMPLATES), (len(shapes.CLASSES),), generator=generator)
        text = tokens[torch.arange(len(shapes.CLASSES)), template]
        image_emb = visual(pixels[idx])
        text_emb = model.encode_text(text, normalize=True)
        logits = image_emb @ text_emb.T * 20.0
        all_classes = torch.arange(len(shapes.CLASSES))
        loss = (F.cross_entropy(logits, labels[idx])
                + 0.5 * aux_loss("image", image_emb, labels[idx]) + 0.5 * aux_loss("text", text_emb, all_classes))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
    model.eval()
    torch.save(model.state_dict(), checkpoint)
    log.info("test model: %d steps in %.0fs, final loss %.3f", steps, time.monotonic() - start, loss_value)
    return {"steps": steps, "loss": loss_value, "seconds": round(time.monotonic() - start, 1)}


def _build_once(target: Path, build) -> Path:
    """``build(work)`` into a scratch folder, then move it to ``target``: a crash leaves no half."""
    if not target.exists():
        work = target.with_name(target.name + ".tmp")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        build(work)
        os.replace(work, target)
    return target


class _CacheLock:
    """One builder at a time across processes (pytest and a benchmark may start together)."""

    def __init__(self, cache_dir: Path):
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / ".lock"

    def __enter__(self) -> None:
        self.file = open(self.path, "w")  # noqa: SIM115 - held until __exit__
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *_) -> None:
        self.file.close()


def ensure_export(name: str, build: Callable[[Path], object], cache_dir: Path = DEFAULT_CACHE,
                  extra_sources: Sequence[Path] = ()) -> Path:
    """The folder ``build(folder)`` filled (an export, and what it was exported from), built once per
    version of the export code (and of ``extra_sources``) and kept in the cache."""
    cache_dir = Path(cache_dir)
    with _CacheLock(cache_dir):
        return _build_once(cache_dir / f"{name}-{_export_fingerprint(*extra_sources)}", build)


def ensure_test_model(cache_dir: Path = DEFAULT_CACHE, int8: bool = False) -> Path:
    """A model repository holding the trained, exported test model (fp32; ``int8`` adds that variant)."""
    from imagesearch.export.pipeline import export_model
    from imagesearch.export.source import ExportOptions
    from imagesearch.export.triton_config import TritonOptions

    cache_dir = Path(cache_dir)
    with _CacheLock(cache_dir):
        trained = _build_once(cache_dir / f"test-model-{_training_fingerprint()}",
                              lambda work: (work / "training.json").write_text(json.dumps(train(work / "checkpoint.pt"))))

        def export(work: Path) -> None:
            export_model(
                ExportOptions(model=ARCH, pretrained=str(trained / "checkpoint.pt"), slug=SLUG,
                              model_config=trained / "config", int8=int8),
                work,
                triton_options=TritonOptions(kind="KIND_CPU", visual_max_batch=64, textual_max_batch=64),
            )

        name = f"model_repository-{_export_fingerprint()}{'-int8' if int8 else ''}"
        return _build_once(trained / name, export)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_test_model(int8="--int8" in sys.argv))
