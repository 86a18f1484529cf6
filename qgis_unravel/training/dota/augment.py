"""The DOTA recipes' training augmentation (the configs' ``RRandomFlip`` and ``PolyRandomRotate``):

* one of horizontal, vertical or diagonal (both) flips, each a quarter of the time;
* half the time a rotation about the image centre by an angle drawn uniformly in (-180, 180)
  degrees, or by one of +-90/+-180 when the image holds a "rectangular" class (storage tanks,
  roundabouts); the image keeps its size, corners are filled with 0, and boxes whose centre
  leaves the image or with a side of 5 px or less are dropped.

When a rotation would leave no box, mmdet's pipeline draws another sample; here the rotation is
skipped instead, so that every index yields a sample.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..augment import _norm, hflip, vflip

DISCRETE_ANGLES = (90.0, 180.0, -90.0, -180.0)
MIN_SIDE_AFTER_ROTATE = 5.0


def random_flip(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """None, horizontal, vertical or diagonal flip with probabilities 1/4 each."""
    choice = int(rng.integers(4))
    if choice in (1, 3):
        image, boxes = hflip(image, boxes)
    if choice in (2, 3):
        image, boxes = vflip(image, boxes)
    return image, boxes


def rotate_image(image: np.ndarray, degrees: float) -> np.ndarray:
    """Turn an (H, W, 3) uint8 image counter-clockwise (on screen) about its centre, same size,
    bilinear, 0 outside (OpenCV's ``warpAffine`` with ``getRotationMatrix2D``)."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    t = np.deg2rad(degrees)
    cos, sin = np.cos(t), np.sin(t)
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    dx, dy = xs - w / 2, ys - h / 2
    # inverse of the forward map x' = cos dx + sin dy, y' = -sin dx + cos dy
    src_x = cos * dx - sin * dy + w / 2
    src_y = sin * dx + cos * dy + h / 2
    grid = np.stack([src_x / w * 2 - 1, src_y / h * 2 - 1], axis=-1)[None]
    src = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = F.grid_sample(
        src, torch.from_numpy(grid).float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def rotate_boxes(boxes: np.ndarray, degrees: float, width: int, height: int) -> np.ndarray:
    """le90 boxes under the same turn as ``rotate_image``."""
    t = np.deg2rad(degrees)
    cos, sin = np.cos(t), np.sin(t)
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    dx, dy = out[:, 0] - width / 2, out[:, 1] - height / 2
    out[:, 0] = cos * dx + sin * dy + width / 2
    out[:, 1] = -sin * dx + cos * dy + height / 2
    out[:, 4] = _norm(out[:, 4] - t)
    return out


def random_rotate(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    rect_labels: Sequence[int] = (),
    ratio: float = 0.5,
    angle_range: float = 180.0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PolyRandomRotate with ``auto_bound=False``; see the module docstring."""
    if rng.random() >= ratio:
        return image, boxes, labels
    angle = angle_range * (2 * rng.random() - 1)
    if any(int(lab) in rect_labels for lab in labels):
        angle = DISCRETE_ANGLES[int(rng.integers(len(DISCRETE_ANGLES)))]
    h, w = image.shape[:2]
    turned = rotate_boxes(boxes, angle, w, h)
    keep = (
        (turned[:, 0] > 0)
        & (turned[:, 0] < w)
        & (turned[:, 1] > 0)
        & (turned[:, 1] < h)
        & (turned[:, 2] > MIN_SIDE_AFTER_ROTATE)
        & (turned[:, 3] > MIN_SIDE_AFTER_ROTATE)
    )
    if not keep.any():
        return image, boxes, labels
    return rotate_image(image, angle), turned[keep], labels[keep]


class RecipeAugment:
    """Flip then rotate, as the Oriented R-CNN DOTA configs of UnravelNet and LEGNet train."""

    def __init__(self, rect_labels: Sequence[int] = (), rotate: bool = True) -> None:
        self.rect_labels = tuple(int(i) for i in rect_labels)
        self.rotate = rotate

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: Optional[np.random.Generator]
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = rng or np.random.default_rng()
        image, boxes = random_flip(image, np.asarray(boxes, dtype=np.float64).reshape(-1, 5), rng)
        if self.rotate:
            image, boxes, labels = random_rotate(image, boxes, labels, rng, self.rect_labels)
        return np.ascontiguousarray(image), boxes, labels
