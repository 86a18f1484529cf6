"""Polygons to oriented boxes: the minimum-area rectangle, as mmrotate's DOTA loader uses
(``cv2.minAreaRect`` then the le90 convention: ``w >= h``, angle in ``[-pi/2, pi/2)``)."""

from __future__ import annotations

import numpy as np


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone-chain convex hull of (N, 2) points, counter-clockwise, no repeated end point."""
    pts = np.unique(np.asarray(points, dtype=np.float64).reshape(-1, 2), axis=0)
    if len(pts) <= 2:
        return pts

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and np.cross(out[-1] - out[-2], p - out[-2]) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def canonical_le90(cx: float, cy: float, w: float, h: float, a: float) -> np.ndarray:
    """The same rectangle with ``w >= h`` and ``a`` in ``[-pi/2, pi/2)``."""
    if w < h:
        w, h, a = h, w, a + np.pi / 2
    a = (a + np.pi / 2) % np.pi - np.pi / 2
    return np.array([cx, cy, w, h, a], dtype=np.float64)


def min_area_rect(points: np.ndarray) -> np.ndarray:
    """Smallest-area enclosing rectangle of (N, 2) points as a le90 box (cx, cy, w, h, a)."""
    hull = convex_hull(points)
    if len(hull) < 3:
        raise ValueError("a polygon needs at least three distinct corners to make a box")
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    best = None
    for a in angles:
        c, s = np.cos(a), np.sin(a)
        u = hull[:, 0] * c + hull[:, 1] * s
        v = -hull[:, 0] * s + hull[:, 1] * c
        area = (u.max() - u.min()) * (v.max() - v.min())
        if best is None or area < best[0] - 1e-9:
            best = (area, a, u.min(), u.max(), v.min(), v.max())
    _, a, u0, u1, v0, v1 = best
    uc, vc = (u0 + u1) / 2, (v0 + v1) / 2
    c, s = np.cos(a), np.sin(a)
    return canonical_le90(uc * c - vc * s, uc * s + vc * c, u1 - u0, v1 - v0, a)
