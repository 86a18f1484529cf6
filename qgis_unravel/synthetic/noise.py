"""Smooth random fields and blurs in numpy (no scipy/OpenCV at run time)."""

from __future__ import annotations

from typing import Tuple

import numpy as np


def _upsample_bilinear(grid: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D grid to ``shape`` (corners aligned)."""
    gh, gw = grid.shape
    height, width = shape
    ys = np.linspace(0, gh - 1, height)
    xs = np.linspace(0, gw - 1, width)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def value_noise(
    rng: np.random.Generator, shape: Tuple[int, int], cell: float, octaves: int = 4
) -> np.ndarray:
    """Fractal value noise in about [-1, 1]: coarse features of ``cell`` pixels plus finer octaves."""
    height, width = shape
    total = np.zeros(shape, dtype=np.float64)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        gh = max(int(np.ceil(height / cell)) + 2, 2)
        gw = max(int(np.ceil(width / cell)) + 2, 2)
        total += amp * _upsample_bilinear(rng.uniform(-1, 1, (gh, gw)), shape)
        norm += amp
        amp *= 0.5
        cell = max(cell / 2.0, 1.0)
    return total / norm


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian kernel reaching 3 sigma."""
    radius = max(int(np.ceil(3 * sigma)), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W) or (H, W, C) array with edge replication."""
    if sigma <= 0:
        return img
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out
