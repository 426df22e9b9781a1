"""Synthetic images of coloured shapes on varied backgrounds, with captions like "a red circle".

Used to train the tiny test model (tests/support/test_model.py) and by tests that need images whose
content is known. Pillow only: no torch, so runtime tests can import it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (40, 100, 250),
    "yellow": (240, 210, 20),
}
SHAPES = ("circle", "square", "triangle")
CLASSES = [(c, s) for c in COLOURS for s in SHAPES]


def caption(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


@dataclass(frozen=True)
class ShapeImage:
    colour: str
    shape: str
    image: Image.Image

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape)

    def encode(self, fmt: str = "JPEG", **kwargs) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}) | kwargs)
        return buf.getvalue()


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Greyish or pastel backgrounds, flat or with a gradient and speckles."""
    base = rng.randint(70, 190)
    tint = [max(0, min(255, base + rng.randint(-30, 30))) for _ in range(3)]
    img = Image.new("RGB", size, tuple(tint))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # gradient bands
        for y in range(0, size[1], 4):
            shade = max(0, min(255, base + (y * 60 // size[1]) - 30))
            draw.rectangle([0, y, size[0], y + 3], fill=(shade, shade, min(255, shade + 10)))
    for _ in range(rng.randint(0, 30)):  # speckles
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        g = rng.randint(0, 255)
        draw.point((x, y), fill=(g, g, g))
    return img


def draw_shape(colour: str, shape: str, rng: random.Random, size: tuple[int, int] = (96, 96)) -> ShapeImage:
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    w, h = size
    extent = rng.uniform(0.45, 0.75) * min(w, h)
    cx = rng.uniform(extent / 2, w - extent / 2)
    cy = rng.uniform(extent / 2, h - extent / 2)
    r = extent / 2
    fill = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in COLOURS[colour])
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return ShapeImage(colour, shape, img)


def dataset(n_per_class: int, seed: int, size: tuple[int, int] = (96, 96)) -> list[ShapeImage]:
    rng = random.Random(seed)
    return [draw_shape(c, s, rng, size) for _ in range(n_per_class) for c, s in CLASSES]
