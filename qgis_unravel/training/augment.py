"""Training augmentations on a chip and its oriented boxes: flips, 90-degree turns, colour.

Coordinates are continuous pixels (pixel j spans [j, j+1)), so a horizontal flip maps x to
W - x exactly; a flip mirrors the angle, a quarter turn shifts it by pi/2.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def _norm(a: np.ndarray) -> np.ndarray:
    return (a + np.pi / 2) % np.pi - np.pi / 2


def hflip(image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    out = boxes.copy()
    out[:, 0] = image.shape[1] - boxes[:, 0]
    out[:, 4] = _norm(-boxes[:, 4])
    return image[:, ::-1], out


def vflip(image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    out = boxes.copy()
    out[:, 1] = image.shape[0] - boxes[:, 1]
    out[:, 4] = _norm(-boxes[:, 4])
    return image[::-1], out


def rot90(image: np.ndarray, boxes: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Turn by k quarter turns as ``np.rot90`` does (counter-clockwise on screen)."""
    out = boxes.copy()
    for _ in range(k % 4):
        width = image.shape[1]
        image = np.rot90(image)
        x, y = out[:, 0].copy(), out[:, 1].copy()
        out[:, 0], out[:, 1] = y, width - x
        out[:, 4] = _norm(out[:, 4] - np.pi / 2)
    return image, out


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation (each half the time), as uint8."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32)
    if rng.random() < 0.5:
        img = (img - img.mean()) * rng.uniform(0.7, 1.3) + img.mean()
    if rng.random() < 0.5:
        gray = img.mean(axis=2, keepdims=True)
        img = gray + (img - gray) * rng.uniform(0.6, 1.4)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    rng: np.random.Generator,
    flips: bool = True,
    rotate: bool = True,
    colour: bool = True,
) -> Tuple[np.ndarray, np.ndarray]:
    """Random flips, a random quarter turn (square chips only) and colour jitter."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if flips and rng.random() < 0.5:
        image, boxes = hflip(image, boxes)
    if flips and rng.random() < 0.5:
        image, boxes = vflip(image, boxes)
    if rotate and image.shape[0] == image.shape[1]:
        image, boxes = rot90(image, boxes, int(rng.integers(4)))
    if colour:
        image = photometric(image, rng)
    return np.ascontiguousarray(image), boxes
