"""Where objects go: clusters (parking lots, depots, aprons, tank farms, moorings), vehicles
along roads and scattered singles, without overlaps and on the right land cover.

Boxes are ``(cx, cy, w, h, a)`` in pixels with ``w >= h`` and ``a`` in ``[-pi/2, pi/2)`` (le90).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import paint
from .background import Background
from .objects import CLASSES, ObjectClass, corners

MARGIN = 3.0  # free pixels kept around every object


def norm_angle(a: float) -> float:
    """Angle into [-pi/2, pi/2)."""
    return float((a + np.pi / 2) % np.pi - np.pi / 2)


@dataclass
class Placed:
    """Objects placed so far and the occupied pixels."""

    occupied: np.ndarray
    boxes: List[Tuple[float, float, float, float, float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)


def _footprint(box, shape):
    cx, cy, w, h, a = box
    grown = (cx, cy, w + 2 * MARGIN, h + 2 * MARGIN, a)
    return paint.convex_coverage(corners(grown), shape)


def _on_right_cover(cls: ObjectClass, box, bg: Background) -> bool:
    size = bg.water.shape[0]
    pts = np.vstack([corners(box), np.array(box[:2])[None]])
    if pts.min() < 0 or pts.max() >= size:
        return False
    wet = bg.water[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    return bool(wet.all()) if cls.on_water else not bool(wet.any())


def try_place(
    placed: Placed, bg: Background, label: int, cx: float, cy: float, angle: float, wh: Tuple[float, float]
) -> Optional[tuple]:
    """Add one object if it fits (inside, right cover, no overlap); return its box or None."""
    cls = CLASSES[label]
    w, h = wh
    box = (float(cx), float(cy), float(w), float(h), 0.0 if cls.round else norm_angle(angle))
    if not _on_right_cover(cls, box, bg):
        return None
    fp = _footprint(box, placed.occupied.shape)
    if fp is None or paint.any_marked(placed.occupied, fp):
        return None
    paint.mark(placed.occupied, fp)
    placed.boxes.append(box)
    placed.labels.append(label)
    return box


def _pad(img: np.ndarray, cx, cy, w, h, a, shade) -> None:
    """A concrete or asphalt pad under a cluster."""
    paint.blend(img, paint.convex_coverage(corners((cx, cy, w, h, a)), img.shape[:2]), (shade,) * 3, 0.9)


def _grid_cluster(
    rng,
    placed,
    bg,
    label,
    centre,
    angle,
    rows,
    cols,
    pitch,
    along_rows: bool,
    fill: float,
    pad_shade: Optional[float],
) -> None:
    """Objects on a regular grid (parking rows, tank farms, aprons), some slots left empty."""
    cls = CLASSES[label]
    cx, cy = centre
    du = np.array([np.cos(angle), np.sin(angle)])
    dv = np.array([-np.sin(angle), np.cos(angle)])
    if pad_shade is not None:
        _pad(bg.image, cx, cy, cols * pitch[0] + 16, rows * pitch[1] + 16, angle, pad_shade)
    for r in range(rows):
        for c in range(cols):
            if rng.random() > fill:
                continue
            off = (c - (cols - 1) / 2) * pitch[0] * du + (r - (rows - 1) / 2) * pitch[1] * dv
            jitter = rng.normal(0, 1.0, 2)
            obj_angle = angle + (0.0 if along_rows else np.pi / 2) + rng.normal(0, 0.04)
            if rng.random() < 0.5:
                obj_angle += np.pi
            try_place(
                placed,
                bg,
                label,
                cx + off[0] + jitter[0],
                cy + off[1] + jitter[1],
                obj_angle,
                cls.sample_size(rng),
            )


def _cluster(rng: np.random.Generator, placed: Placed, bg: Background, label: int) -> None:
    size = bg.water.shape[0]
    cls = CLASSES[label]
    centre = rng.uniform(0.08 * size, 0.92 * size, 2)
    angle = rng.uniform(-np.pi / 2, np.pi / 2)
    if cls.on_water:
        water_pts = np.argwhere(bg.water)
        if len(water_pts) == 0:
            return
        y, x = water_pts[rng.integers(len(water_pts))]
        centre = np.array([x, y], dtype=float)
    elif bg.water[int(centre[1]), int(centre[0])]:
        return  # no parking lot in a lake
    lmax, amax = cls.length[1], cls.aspect[1]
    if cls.name == "small-vehicle":
        spec = dict(
            rows=int(rng.integers(2, 5)),
            cols=int(rng.integers(4, 10)),
            pitch=(lmax * amax + 8, lmax + 12),
            along_rows=False,
            pad=rng.uniform(95, 140),
        )
    elif cls.name == "large-vehicle":
        spec = dict(
            rows=int(rng.integers(1, 3)),
            cols=int(rng.integers(3, 7)),
            pitch=(lmax * amax + 10, lmax + 14),
            along_rows=False,
            pad=rng.uniform(110, 150),
        )
    elif cls.name == "plane":
        spec = dict(
            rows=int(rng.integers(1, 3)),
            cols=int(rng.integers(2, 5)),
            pitch=(lmax + 14, lmax + 14),
            along_rows=bool(rng.random() < 0.5),
            pad=rng.uniform(150, 190),
        )
    elif cls.name == "storage-tank":
        spec = dict(
            rows=int(rng.integers(2, 4)),
            cols=int(rng.integers(2, 5)),
            pitch=(lmax + 10, lmax + 10),
            along_rows=True,
            pad=rng.uniform(160, 200),
        )
    else:  # ships moored side by side
        spec = dict(
            rows=1, cols=int(rng.integers(2, 6)), pitch=(lmax * amax + 10, lmax), along_rows=False, pad=None
        )
    _grid_cluster(
        rng,
        placed,
        bg,
        label,
        centre,
        angle,
        spec["rows"],
        spec["cols"],
        spec["pitch"],
        spec["along_rows"],
        rng.uniform(0.6, 0.95),
        spec["pad"],
    )


def _along_roads(rng: np.random.Generator, placed: Placed, bg: Background) -> None:
    """Cars and trucks driving on the roads, aligned with them."""
    for x, y, angle, width in bg.roads:
        for _ in range(int(rng.integers(3, 9))):
            label = 2 if rng.random() < 0.7 else 3
            t = rng.uniform(-bg.water.shape[0], bg.water.shape[0])
            side = (1 if rng.random() < 0.5 else -1) * width / 4
            px = x + t * np.cos(angle) - side * np.sin(angle)
            py = y + t * np.sin(angle) + side * np.cos(angle)
            heading = angle + (np.pi if side < 0 else 0.0) + rng.normal(0, 0.03)
            try_place(placed, bg, label, px, py, heading, CLASSES[label].sample_size(rng))


def _scattered(rng: np.random.Generator, placed: Placed, bg: Background, count: int) -> None:
    size = bg.water.shape[0]
    for _ in range(count):
        label = int(rng.integers(len(CLASSES)))
        cx, cy = rng.uniform(0, size, 2)
        try_place(placed, bg, label, cx, cy, rng.uniform(-np.pi, np.pi), CLASSES[label].sample_size(rng))


def place_objects(rng: np.random.Generator, bg: Background, density: float = 1.0) -> Placed:
    """Clusters first (they need room), then road traffic, then scattered singles."""
    size = bg.water.shape[0]
    placed = Placed(np.zeros((size, size), dtype=bool))
    scale = density * (size / 1024.0) ** 2
    n_clusters = int(rng.poisson(5 * scale))
    for _ in range(n_clusters):
        _cluster(rng, placed, bg, int(rng.integers(len(CLASSES))))
    _along_roads(rng, placed, bg)
    _scattered(rng, placed, bg, int(60 * scale))
    return placed
