"""Procedural land-cover backgrounds: textured fields, water bodies and roads.

The background is a float RGB canvas. It also returns a water mask (ships go on water, the other
classes on land) and the list of roads (vehicles line up along them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from . import paint
from .noise import _upsample_bilinear, gaussian_blur, value_noise

_CROPS = (
    (96, 128, 60),
    (120, 140, 70),
    (150, 135, 95),
    (170, 150, 110),
    (80, 105, 55),
    (135, 120, 80),
    (110, 125, 90),
    (165, 165, 120),
)
_WATER = (np.array([30.0, 60.0, 85.0]), np.array([45.0, 85.0, 90.0]))


@dataclass
class Background:
    """The canvas plus what object placement needs to know about it."""

    image: np.ndarray  # (H, W, 3) float64, 0..255
    water: np.ndarray  # (H, W) bool
    roads: List[Tuple[float, float, float, float]] = field(default_factory=list)  # x, y, angle, width


def _fields(rng: np.random.Generator, size: int) -> np.ndarray:
    """Voronoi parcels, each with its crop colour and row stripes at its own angle."""
    n = int(rng.integers(8, 24))
    low = max(size // 4, 8)
    seeds = rng.uniform(0, low, (n, 2))
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float64)
    d = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    cell_low = np.argmin(d, axis=-1)
    idx = np.minimum((np.arange(size) * low) // size, low - 1)
    cell = cell_low[idx][:, idx]
    colors = np.array([_CROPS[i] for i in rng.integers(len(_CROPS), size=n)], dtype=np.float64)
    colors += rng.uniform(-12, 12, (n, 3))
    angles = rng.uniform(0, np.pi, n)
    periods = rng.uniform(5, 14, n)
    amps = rng.uniform(0, 14, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = (xx * np.cos(angles[cell]) + yy * np.sin(angles[cell])) * (2 * np.pi / periods[cell])
    img = colors[cell] + (amps[cell] * np.sin(phase))[..., None]
    return gaussian_blur(img, 1.0)


def _water_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth blob (lake, river bend or coast) covering part of the scene, or nothing."""
    if rng.random() < 0.3:
        return np.zeros((size, size), dtype=bool)
    level = value_noise(rng, (size, size), cell=size / 2.5, octaves=3)
    # Keep about a fifth to a third of the scene under water.
    return level > np.quantile(level, rng.uniform(0.65, 0.82))


def _paint_water(rng: np.random.Generator, img: np.ndarray, water: np.ndarray) -> None:
    size = img.shape[0]
    t = rng.random()
    color = _WATER[0] * (1 - t) + _WATER[1] * t
    ripple = value_noise(rng, (size, size), cell=24, octaves=3)[..., None] * 8.0
    soft = gaussian_blur(water.astype(np.float64), 1.5)[..., None]
    img[...] = img * (1 - soft) + (color + ripple) * soft


def _roads(
    rng: np.random.Generator, img: np.ndarray, water: np.ndarray
) -> List[Tuple[float, float, float, float]]:
    """Straight asphalt roads across the scene, with a dashed centre line."""
    size = img.shape[0]
    roads = []
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(0.1 * size, 0.9 * size, 2)
        angle = rng.uniform(0, np.pi)
        width = rng.uniform(14, 24)
        d = np.array([np.cos(angle), np.sin(angle)]) * size * 1.5
        n = np.array([-np.sin(angle), np.cos(angle)]) * width / 2
        p = np.array([x, y])
        quad = np.array([p - d - n, p + d - n, p + d + n, p - d + n])
        shade = rng.uniform(80, 115)
        paint.blend(img, paint.convex_coverage(quad, img.shape[:2]), (shade, shade, shade + 3))
        for k in np.arange(-1.5 * size, 1.5 * size, 24.0):
            a = p + np.array([np.cos(angle), np.sin(angle)]) * k
            b = a + np.array([np.cos(angle), np.sin(angle)]) * 10
            m = n / max(width / 2, 1) * 0.8
            dash = np.array([a - m, b - m, b + m, a + m])
            paint.blend(img, paint.convex_coverage(dash, img.shape[:2]), (220, 220, 200), 0.8)
        roads.append((float(x), float(y), float(angle), float(width)))
    return roads


def make_background(rng: np.random.Generator, size: int) -> Background:
    """Fields with texture, then water, then roads (roads bridge over water)."""
    img = _fields(rng, size)
    grain = value_noise(rng, (size, size), cell=size / 8, octaves=5)
    img += grain[..., None] * rng.uniform(8, 20)
    tint = _upsample_bilinear(rng.uniform(-10, 10, (3, 3, 3)).reshape(3, 3, 3)[..., 0], (size, size))
    img += tint[..., None]
    water = _water_mask(rng, size)
    if water.any():
        _paint_water(rng, img, water)
    roads = _roads(rng, img, water)
    return Background(np.clip(img, 0, 255), water, roads)
