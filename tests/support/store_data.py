"""Made-up image records and unit vectors for the store tests."""

from __future__ import annotations

import hashlib

import numpy as np

from imagesearch.records import ImageRecord


def image_id(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


def record(i: int, fmt: str = "jpeg", width: int = 100, height: int = 100, source: str = "url",
           urls: list[str] | None = None) -> ImageRecord:
    return ImageRecord(id=image_id(i), urls=[f"https://example.com/{i}.jpg"] if urls is None else urls,
                       sources=[source], width=width, height=height, format=fmt, bytes=1000 + i)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def toward(query: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine with the unit vector ``query`` is exactly ``cosine``."""
    other = np.random.default_rng(seed).standard_normal(len(query)).astype(np.float32)
    other -= (other @ query) * query
    other /= np.linalg.norm(other)
    return (cosine * query + np.sqrt(1 - cosine**2) * other).astype(np.float32)
