"""Cutting labelled rasters into training chips at the model's tile size and overlap.

Chip windows tile the raster with the given overlap, the last row/column flush with the edge
(as tiled detection does). An object belongs to a chip when at least ``min_visible`` of its box
lies inside it (DOTA's split rule); its box is kept whole, even where it sticks out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

MIN_VISIBLE = 0.7


def chip_starts(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets along one axis: step ``size - overlap``, the last one ending at the edge."""
    if size <= 0 or overlap < 0 or overlap >= size:
        raise ValueError(f"need 0 <= overlap < size, got size {size}, overlap {overlap}")
    from ..engine.windows import tile_starts  # training chips and detection tiles share one grid rule

    return tile_starts(length, size, overlap)


def chip_windows(height: int, width: int, size: int, overlap: int) -> List[Tuple[int, int]]:
    """(x0, y0) of every chip of a raster."""
    return [(x, y) for y in chip_starts(height, size, overlap) for x in chip_starts(width, size, overlap)]


def visible_fraction(boxes: np.ndarray, x0: float, y0: float, size: int) -> np.ndarray:
    """Fraction of each box's area inside the square window (rotated IoF with the window)."""
    import torch

    from ..ops import box_iou_rotated

    if len(boxes) == 0:
        return np.zeros(0)
    window = torch.tensor([[x0 + size / 2, y0 + size / 2, size, size, 0.0]], dtype=torch.float32)
    iof = box_iou_rotated(torch.as_tensor(boxes[:, :5], dtype=torch.float32), window, mode="iof")
    return iof[:, 0].numpy().astype(np.float64)


@dataclass
class Chip:
    """A chip of raster ``source`` at (x0, y0) and the boxes (chip pixels) and labels it teaches."""

    source: int
    x0: int
    y0: int
    size: int
    boxes: np.ndarray
    labels: np.ndarray


def make_chips(
    source: int,
    boxes: np.ndarray,
    labels: np.ndarray,
    height: int,
    width: int,
    size: int,
    overlap: int,
    min_visible: float = MIN_VISIBLE,
    keep_empty: bool = False,
) -> List[Chip]:
    """All chips of one raster with their targets; chips without objects are dropped unless asked."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    chips = []
    for x0, y0 in chip_windows(height, width, size, overlap):
        near = (
            (boxes[:, 0] > x0 - size)
            & (boxes[:, 0] < x0 + 2 * size)
            & (boxes[:, 1] > y0 - size)
            & (boxes[:, 1] < y0 + 2 * size)
        )
        cand = np.nonzero(near)[0]
        vis = visible_fraction(boxes[cand], x0, y0, size)
        keep = cand[vis >= min_visible]
        if len(keep) == 0 and not keep_empty:
            continue
        local = boxes[keep].copy()
        local[:, 0] -= x0
        local[:, 1] -= y0
        chips.append(Chip(source, x0, y0, size, local, labels[keep]))
    return chips
