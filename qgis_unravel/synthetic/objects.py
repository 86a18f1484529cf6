"""The object classes of the synthetic scenes: sizes, shapes and colours.

Each class is drawn from a few convex parts given in the object's own frame, in fractions of its
oriented box: ``u`` along the long side ``w`` (towards the front), ``v`` across it (``h``). The
classes differ in shape, size range and colour so a small network can learn them quickly, while
orientations and sizes vary enough to exercise the oriented boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np

from . import paint

Part = Tuple[str, np.ndarray, Tuple[float, float, float]]  # ("poly"|"ellipse", geometry, rgb)


@dataclass(frozen=True)
class ObjectClass:
    """One class: its box size range in pixels and how to draw it."""

    name: str
    length: Tuple[float, float]  # w (long side), pixels
    aspect: Tuple[float, float]  # h / w
    on_water: bool
    parts: Callable[[np.random.Generator], List[Part]]
    round: bool = False  # a disc: the box is square and axis-aligned

    def sample_size(self, rng: np.random.Generator) -> Tuple[float, float]:
        """Draw (w, h) with w >= h."""
        w = rng.uniform(*self.length)
        h = w * rng.uniform(*self.aspect)
        return w, min(h, w)


def _poly(points: Sequence[Tuple[float, float]], color) -> Part:
    return ("poly", np.asarray(points, dtype=np.float64), tuple(float(c) for c in color))


def _rect(u0: float, u1: float, v0: float, v1: float, color) -> Part:
    return _poly([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], color)


def _gray(rng: np.random.Generator, lo: float, hi: float):
    g = rng.uniform(lo, hi)
    return (g, g, g + rng.uniform(-4, 6))


def _plane_parts(rng: np.random.Generator) -> List[Part]:
    body = _gray(rng, 215, 248)
    wing = tuple(c - rng.uniform(5, 20) for c in body)
    return [
        _poly([(0.12, 0.0), (-0.08, 0.0), (-0.2, -0.5), (-0.09, -0.5)], wing),
        _poly([(0.12, 0.0), (-0.08, 0.0), (-0.2, 0.5), (-0.09, 0.5)], wing),
        _poly([(-0.36, 0.0), (-0.5, 0.0), (-0.5, -0.2), (-0.44, -0.2)], wing),
        _poly([(-0.36, 0.0), (-0.5, 0.0), (-0.5, 0.2), (-0.44, 0.2)], wing),
        _poly([(-0.5, -0.05), (0.38, -0.06), (0.5, 0.0), (0.38, 0.06), (-0.5, 0.05)], body),
        _rect(0.36, 0.42, -0.04, 0.04, (40, 50, 70)),
    ]


_HULLS = ((205, 205, 210), (150, 45, 40), (55, 65, 90), (235, 235, 232), (40, 40, 45))


def _ship_parts(rng: np.random.Generator) -> List[Part]:
    hull = _HULLS[rng.integers(len(_HULLS))]
    deck = _gray(rng, 150, 240)
    return [
        _poly([(-0.5, -0.5), (0.28, -0.5), (0.5, 0.0), (0.28, 0.5), (-0.5, 0.5)], hull),
        _poly([(-0.44, -0.36), (0.24, -0.36), (0.38, 0.0), (0.24, 0.36), (-0.44, 0.36)], deck),
        _rect(-0.42, -0.18, -0.3, 0.3, (250, 250, 250)),
        _rect(-0.1, 0.15, -0.12, 0.12, tuple(c * 0.7 for c in hull)),
    ]


_CAR_COLORS = (
    (200, 30, 30),
    (30, 60, 170),
    (235, 235, 235),
    (25, 25, 28),
    (160, 165, 170),
    (220, 200, 40),
    (40, 120, 60),
)


def _small_vehicle_parts(rng: np.random.Generator) -> List[Part]:
    body = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
    glass = (20, 30, 45)
    outline = [
        (-0.5, -0.38),
        (-0.44, -0.5),
        (0.44, -0.5),
        (0.5, -0.38),
        (0.5, 0.38),
        (0.44, 0.5),
        (-0.44, 0.5),
        (-0.5, 0.38),
    ]
    return [
        _poly(outline, body),
        _rect(0.12, 0.3, -0.4, 0.4, glass),
        _rect(-0.38, -0.27, -0.38, 0.38, glass),
    ]


_TRAILERS = ((240, 240, 240), (180, 60, 30), (40, 90, 160), (200, 200, 190), (90, 120, 70))


def _large_vehicle_parts(rng: np.random.Generator) -> List[Part]:
    cab = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
    trailer = _TRAILERS[rng.integers(len(_TRAILERS))]
    return [
        _rect(-0.5, 0.28, -0.5, 0.5, trailer),
        _rect(-0.46, 0.24, -0.04, 0.04, tuple(c * 0.85 for c in trailer)),
        _rect(0.31, 0.5, -0.46, 0.46, cab),
        _rect(0.44, 0.49, -0.4, 0.4, (20, 30, 45)),
    ]


def _tank_parts(rng: np.random.Generator) -> List[Part]:
    roof = _gray(rng, 175, 235)
    ring = tuple(c - rng.uniform(25, 45) for c in roof)
    return [
        ("ellipse", np.array([0.0, 0.0, 0.5, 0.5]), roof),
        ("ellipse", np.array([0.0, 0.0, 0.4, 0.4]), ring),
        ("ellipse", np.array([0.0, 0.0, 0.34, 0.34]), roof),
        ("ellipse", np.array([0.0, 0.0, 0.06, 0.06]), ring),
    ]


CLASSES: Tuple[ObjectClass, ...] = (
    ObjectClass("plane", (60.0, 96.0), (0.78, 0.95), False, _plane_parts),
    ObjectClass("ship", (64.0, 120.0), (0.2, 0.27), True, _ship_parts),
    ObjectClass("small-vehicle", (28.0, 36.0), (0.42, 0.52), False, _small_vehicle_parts),
    ObjectClass("large-vehicle", (56.0, 84.0), (0.28, 0.36), False, _large_vehicle_parts),
    ObjectClass("storage-tank", (30.0, 64.0), (1.0, 1.0), False, _tank_parts, round=True),
)
CLASS_NAMES: Tuple[str, ...] = tuple(c.name for c in CLASSES)


def to_image(box: Sequence[float], local: np.ndarray) -> np.ndarray:
    """Map (k, 2) local fractions (u, v) of an oriented box to image coordinates."""
    cx, cy, w, h, a = box
    u = local[:, 0] * w
    v = local[:, 1] * h
    c, s = np.cos(a), np.sin(a)
    return np.stack([cx + c * u - s * v, cy + s * u + c * v], axis=1)


def _coverage(box: Sequence[float], part: Part, shape: Tuple[int, int], shift=(0.0, 0.0)):
    kind, geom, _ = part
    if kind == "poly":
        pts = to_image(box, geom) + np.asarray(shift)
        return paint.convex_coverage(pts, shape)
    cx, cy, w, h, a = box
    centre = to_image(box, geom[None, :2])[0] + np.asarray(shift)
    return paint.ellipse_coverage(centre[0], centre[1], geom[2] * w, geom[3] * h, a, shape)


def draw(canvas: np.ndarray, box: Sequence[float], parts: List[Part], shadow: Tuple[float, float]) -> None:
    """Paint an object's shadow (offset by ``shadow`` pixels) and then its parts."""
    shape = canvas.shape[:2]
    for part in parts[:1] if parts[0][0] == "ellipse" else parts:
        paint.darken(canvas, _coverage(box, part, shape, shadow), 0.55)
    for part in parts:
        paint.blend(canvas, _coverage(box, part, shape), part[2])


def corners(box: Sequence[float]) -> np.ndarray:
    """The four corners (4, 2) of an oriented box, le90 order of mmrotate's obb2poly."""
    return to_image(box, np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]))
