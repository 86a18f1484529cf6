"""Synthetic scenes of the Refined-Det golden data: colour ramps, filled rotated rectangles, noise.

Plain numpy (``RandomState`` per seed), so a scene is the same on every machine. Two variants share
the drawing: :func:`scene` (the inference scene; rectangles may cross the border) and
:func:`scene_with_objects` (the training batch; objects wholly inside, with le90 boxes and labels).
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def _ramps(rng: np.random.RandomState, hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 HWC, xx, yy): one linear colour ramp per channel."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack(
        [rng.uniform(60, 180) + rng.uniform(-0.3, 0.3) * xx + rng.uniform(-0.3, 0.3) * yy for _ in range(3)],
        axis=-1,
    )
    return image, xx, yy


def _paint(image, xx, yy, box, colour) -> None:
    """Fill the rotated rectangle ``box`` = (cx, cy, side along a, side across a, a) in place."""
    cx, cy, along, across, a = box
    u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
    v = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
    image[(np.abs(u) <= along / 2) & (np.abs(v) <= across / 2)] = colour


def _finish(rng: np.random.RandomState, image: np.ndarray) -> np.ndarray:
    """Gaussian noise (std 12), rounded and clipped to uint8."""
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def scene(seed: int, hw: Tuple[int, int]) -> np.ndarray:
    """RGB uint8: colour ramps, 12 filled rotated rectangles (anywhere), noise."""
    rng = np.random.RandomState(seed)
    image, xx, yy = _ramps(rng, hw)
    h, w = hw
    for _ in range(12):
        bw, bh = rng.uniform(12, 60), rng.uniform(6, 24)
        cx, cy, a = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-math.pi / 2, math.pi / 2)
        _paint(image, xx, yy, (cx, cy, bw, bh, a), rng.uniform(0, 255, size=3))
    return _finish(rng, image)


def scene_with_objects(seed: int, hw: Tuple[int, int], count: int = 10, num_classes: int = 15):
    """(RGB uint8, boxes (count, 5) le90 with w >= h, labels (count,)); objects wholly inside
    (centres at least half a long side from the border)."""
    rng = np.random.RandomState(seed)
    image, xx, yy = _ramps(rng, hw)
    h, w = hw
    boxes, labels = [], []
    for _ in range(count):
        long_side, short_side = rng.uniform(16, 64), rng.uniform(8, 24)
        short_side = min(short_side, long_side)
        cx, cy = rng.uniform(long_side / 2, w - long_side / 2), rng.uniform(long_side / 2, h - long_side / 2)
        a = rng.uniform(-math.pi / 2, math.pi / 2)
        _paint(image, xx, yy, (cx, cy, long_side, short_side, a), rng.uniform(0, 255, size=3))
        boxes.append([cx, cy, long_side, short_side, a])
        labels.append(rng.randint(0, num_classes))
    return _finish(rng, image), np.array(boxes, dtype=np.float32), np.array(labels, dtype=np.int64)
