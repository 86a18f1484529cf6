"""One synthetic scene in pixel space: image, oriented boxes and class labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import degrade, objects
from .background import make_background
from .layout import place_objects


@dataclass
class Scene:
    """An RGB image (H, W, 3) uint8 and its objects as le90 boxes (N, 5) with labels (N,)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    seed: int

    @property
    def class_names(self):
        return objects.CLASS_NAMES


def make_scene(seed: int, size: int = 1024, density: float = 1.0) -> Scene:
    """Draw a scene; the same (seed, size, density) always gives the same pixels and boxes."""
    if size < 64:
        raise ValueError(f"scene size must be at least 64 pixels, got {size}")
    rng = np.random.default_rng(seed)
    bg = make_background(rng, size)
    placed = place_objects(rng, bg, density)
    canvas = bg.image
    sun = rng.uniform(0, 2 * np.pi)
    for box, label in zip(placed.boxes, placed.labels):
        length = 0.08 * box[2] + 1.5
        shadow = (length * np.cos(sun), length * np.sin(sun))
        objects.draw(canvas, box, objects.CLASSES[label].parts(rng), shadow)
    image = degrade.apply(rng, canvas, degrade.Degradation.sample(rng))
    boxes = np.asarray(placed.boxes, dtype=np.float64).reshape(-1, 5)
    return Scene(image, boxes, np.asarray(placed.labels, dtype=np.int64), seed)
