"""Plain-numpy polygon geometry for the DOTA tooling: areas, clipping by a convex polygon, and
the overlap measures the split (polygon inside a window) and Task1 (polygon IoU) use.

Clipping is Sutherland-Hodgman: exact for any simple subject polygon against a convex clip
polygon (a window, or a detected rectangle), which is all DOTA needs.
"""

from __future__ import annotations

import numpy as np


def polygon_area(points: np.ndarray) -> float:
    """Unsigned shoelace area of an (N, 2) polygon."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def _counter_clockwise(points: np.ndarray) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    signed = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    return points if signed >= 0 else points[::-1]


def clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """The part of ``subject`` (N, 2) inside the convex polygon ``clip`` (M, 2), as (K, 2)."""
    out = np.asarray(subject, dtype=np.float64).reshape(-1, 2)
    clip = _counter_clockwise(np.asarray(clip, dtype=np.float64).reshape(-1, 2))
    for a, b in zip(clip, np.roll(clip, -1, axis=0)):
        if len(out) == 0:
            break
        edge = b - a
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])  # >= 0: inside
        kept = []
        for i in range(len(out)):
            j = (i + 1) % len(out)
            p, q, sp, sq = out[i], out[j], side[i], side[j]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                kept.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(kept).reshape(-1, 2)
    return out


def window_polygon(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def iof_window(polys: np.ndarray, window) -> np.ndarray:
    """Fraction of each polygon (N, 8) that lies inside the window (x0, y0, x1, y1)."""
    polys = np.asarray(polys, dtype=np.float64).reshape(-1, 4, 2)
    clip = window_polygon(*window)
    out = np.zeros(len(polys))
    for i, p in enumerate(polys):
        lo, hi = p.min(axis=0), p.max(axis=0)
        if hi[0] <= window[0] or lo[0] >= window[2] or hi[1] <= window[1] or lo[1] >= window[3]:
            continue
        out[i] = polygon_area(clip_polygon(p, clip)) / max(polygon_area(p), 1e-6)
    return out


def polygon_iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(N, M) IoU of convex detection polygons (N, 8) with ground-truth polygons (M, 8)."""
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 4, 2)
    gts = np.asarray(gts, dtype=np.float64).reshape(-1, 4, 2)
    ious = np.zeros((len(dets), len(gts)))
    if len(dets) == 0 or len(gts) == 0:
        return ious
    d_lo, d_hi = dets.min(axis=1), dets.max(axis=1)
    g_lo, g_hi = gts.min(axis=1), gts.max(axis=1)
    d_area = np.array([polygon_area(d) for d in dets])
    g_area = np.array([polygon_area(g) for g in gts])
    meets = (
        (d_lo[:, None, 0] < g_hi[None, :, 0])
        & (g_lo[None, :, 0] < d_hi[:, None, 0])
        & (d_lo[:, None, 1] < g_hi[None, :, 1])
        & (g_lo[None, :, 1] < d_hi[:, None, 1])
    )
    for i, j in zip(*np.nonzero(meets)):
        inter = polygon_area(clip_polygon(gts[j], dets[i]))
        ious[i, j] = inter / max(d_area[i] + g_area[j] - inter, 1e-12)
    return ious
