"""Anti-aliased painting of convex polygons and ellipses onto a float RGB canvas.

OpenCV is not a dependency, so shapes are filled here with numpy: every pixel is sampled on a
small sub-pixel grid and the covered fraction blends the colour in. Pixel (i, j) covers
``[j, j+1) x [i, i+1)`` in image coordinates, the convention of the detector and the labels.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

SUPERSAMPLE = 3


def _window(xs: np.ndarray, ys: np.ndarray, shape: Tuple[int, int]) -> Optional[Tuple[int, int, int, int]]:
    """Pixel window (x0, y0, x1, y1) covering the points, clipped to the image, or None if empty."""
    height, width = shape
    x0 = max(int(np.floor(xs.min())), 0)
    y0 = max(int(np.floor(ys.min())), 0)
    x1 = min(int(np.ceil(xs.max())) + 1, width)
    y1 = min(int(np.ceil(ys.max())) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _sample_grid(window: Tuple[int, int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample positions of a window, shaped (h, w, S*S)."""
    x0, y0, x1, y1 = window
    offs = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    ox, oy = np.meshgrid(offs, offs)
    gx = np.arange(x0, x1, dtype=np.float64)[None, :, None] + ox.reshape(1, 1, -1)
    gy = np.arange(y0, y1, dtype=np.float64)[:, None, None] + oy.reshape(1, 1, -1)
    return np.broadcast_arrays(gx, gy)


def convex_coverage(poly: np.ndarray, shape: Tuple[int, int]):
    """Fraction of each pixel inside a convex polygon (k, 2): (window, coverage) or None."""
    poly = np.asarray(poly, dtype=np.float64)
    window = _window(poly[:, 0], poly[:, 1], shape)
    if window is None:
        return None
    gx, gy = _sample_grid(window)
    # Orient the polygon counter-clockwise in (x, y) so "inside" is the left of every edge.
    area2 = np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    if area2 < 0:
        poly = poly[::-1]
    inside = np.ones(gx.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        inside &= (bx - ax) * (gy - ay) - (by - ay) * (gx - ax) >= 0
    return window, inside.mean(axis=-1)


def ellipse_coverage(cx: float, cy: float, rx: float, ry: float, angle: float, shape: Tuple[int, int]):
    """Fraction of each pixel inside a rotated ellipse: (window, coverage) or None."""
    r = max(rx, ry)
    window = _window(np.array([cx - r, cx + r]), np.array([cy - r, cy + r]), shape)
    if window is None:
        return None
    gx, gy = _sample_grid(window)
    c, s = np.cos(angle), np.sin(angle)
    u = (gx - cx) * c + (gy - cy) * s
    v = -(gx - cx) * s + (gy - cy) * c
    inside = (u / max(rx, 1e-6)) ** 2 + (v / max(ry, 1e-6)) ** 2 <= 1.0
    return window, inside.mean(axis=-1)


def blend(canvas: np.ndarray, covered, color: Sequence[float], alpha: float = 1.0) -> None:
    """Blend ``color`` into ``canvas`` (H, W, 3) float where ``covered`` says, in place."""
    if covered is None:
        return
    (x0, y0, x1, y1), cov = covered
    a = (alpha * cov)[..., None]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - a
    region += a * np.asarray(color, dtype=canvas.dtype)


def darken(canvas: np.ndarray, covered, factor: float) -> None:
    """Multiply the canvas by ``factor`` where covered (shadows keep the texture below)."""
    if covered is None:
        return
    (x0, y0, x1, y1), cov = covered
    canvas[y0:y1, x0:x1] *= (1.0 - cov * (1.0 - factor))[..., None]


def mark(mask: np.ndarray, covered, threshold: float = 0.0) -> None:
    """Set ``mask`` (bool, H x W) where the coverage exceeds ``threshold``."""
    if covered is None:
        return
    (x0, y0, x1, y1), cov = covered
    mask[y0:y1, x0:x1] |= cov > threshold


def any_marked(mask: np.ndarray, covered) -> bool:
    """Whether any covered pixel is already set in ``mask``."""
    if covered is None:
        return False
    (x0, y0, x1, y1), cov = covered
    return bool(np.any(mask[y0:y1, x0:x1] & (cov > 0)))
