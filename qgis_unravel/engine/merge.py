"""Merging per-tile detections into one set for the whole raster.

Three steps: shift tile boxes into raster (processing) pixels; drop a detection cut by an
interior tile border when a neighbouring tile holds the whole object (that tile saw it
whole and its box is the better one); then a per-class rotated NMS across tiles.

The NMS is the ops' ``grouped_nms_rotated`` (the project's one rotated NMS) in float64: greedy
over all boxes, but rotated IoUs are computed only for pairs whose bounds meet (the ops' grid
index), so it scales with the number of boxes rather than its square, even for a 100k x 100k
raster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .georef import box_corners
from .windows import Tile, TileGrid


@dataclass
class TileDetections:
    """The detector's output for one tile, boxes in tile pixels."""

    tile: Tile
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class Detections:
    """Boxes (N, 5) in raster processing pixels with scores, labels and source tiles."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.labels[index], self.tiles[index])


def seam_margin(tile_size: int) -> float:
    """How close to a border a box must reach to count as cut by it (processing pixels)."""
    return max(2.0, 0.005 * tile_size)


def shift(parts: Sequence[TileDetections]) -> Detections:
    """Concatenate per-tile detections, boxes moved into raster pixels."""
    if not parts:
        return Detections()
    boxes = []
    for part in parts:
        b = np.asarray(part.boxes, dtype=np.float64).reshape(-1, 5).copy()
        b[:, 0] += part.tile.x0
        b[:, 1] += part.tile.y0
        boxes.append(b)
    return Detections(
        np.concatenate(boxes),
        np.concatenate([np.asarray(p.scores, np.float32).reshape(-1) for p in parts]),
        np.concatenate([np.asarray(p.labels, np.int64).reshape(-1) for p in parts]),
        np.concatenate([np.full(len(p.scores), p.tile.index, np.int64) for p in parts]),
    )


def bounds(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xmin, ymin, xmax, ymax of the rotated boxes' corners."""
    corners = box_corners(boxes)
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def cut_by_interior_border(tile: Tile, aabb: np.ndarray, margin: float) -> np.ndarray:
    """Which boxes reach one of the tile's interior borders (where the tile, not the raster, ends)."""
    left, top, right, bottom = tile.interior
    cut = np.zeros(len(aabb), dtype=bool)
    if left:
        cut |= aabb[:, 0] <= tile.x0 + margin
    if top:
        cut |= aabb[:, 1] <= tile.y0 + margin
    if right:
        cut |= aabb[:, 2] >= tile.x1 - margin
    if bottom:
        cut |= aabb[:, 3] >= tile.y1 - margin
    return cut


def held_whole(tile: Tile, aabb: np.ndarray, margin: float) -> np.ndarray:
    """Which boxes lie inside ``tile`` without reaching any of its interior borders."""
    left, top, right, bottom = tile.interior
    inside = (
        (aabb[:, 0] >= tile.x0 + (margin if left else -margin))
        & (aabb[:, 1] >= tile.y0 + (margin if top else -margin))
        & (aabb[:, 2] <= tile.x1 - (margin if right else -margin))
        & (aabb[:, 3] <= tile.y1 - (margin if bottom else -margin))
    )
    return inside


def seam_filter(dets: Detections, grid: TileGrid, processed: Sequence[int]) -> np.ndarray:
    """Mask of detections to keep: drop those cut by an interior border of their own tile
    when a processed neighbouring tile contains the whole box."""
    keep = np.ones(len(dets), dtype=bool)
    if len(dets) == 0:
        return keep
    done = set(int(i) for i in processed)
    margin = seam_margin(grid.tile_size)
    aabb = bounds(dets.boxes)
    order = np.argsort(dets.tiles, kind="stable")
    tile_ids, starts = np.unique(dets.tiles[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    for tile_index, start, end in zip(tile_ids.tolist(), starts.tolist(), ends.tolist()):
        tile = grid.tiles[tile_index]
        rows = order[start:end]
        cut = rows[cut_by_interior_border(tile, aabb[rows], margin)]
        if len(cut) == 0:
            continue
        whole_elsewhere = np.zeros(len(cut), dtype=bool)
        for other in grid.neighbours(tile):
            if other.index in done:
                whole_elsewhere |= held_whole(other, aabb[cut], margin)
        keep[cut[whole_elsewhere]] = False
    return keep


def nms_across_tiles(dets: Detections, iou_threshold: float) -> np.ndarray:
    """Keep mask of per-class greedy rotated NMS over all detections (float64 boxes)."""
    keep = np.ones(len(dets), dtype=bool)
    if len(dets) < 2:
        return keep
    import torch

    from ..ops import grouped_nms_rotated

    kept = grouped_nms_rotated(torch.from_numpy(np.ascontiguousarray(dets.boxes, dtype=np.float64)),
                               torch.from_numpy(np.ascontiguousarray(dets.scores, dtype=np.float64)),
                               torch.from_numpy(np.ascontiguousarray(dets.labels, dtype=np.int64)),
                               iou_threshold)
    keep[:] = False
    keep[kept.numpy()] = True
    return keep


def merge(parts: Sequence[TileDetections], grid: TileGrid, processed: Sequence[int],
          iou_threshold: float, seam_rule: bool = True) -> Detections:
    """All tiles' detections as one non-redundant set, in processing pixels, best first."""
    dets = shift(parts)
    if seam_rule:
        dets = dets.take(seam_filter(dets, grid, processed))
    dets = dets.take(nms_across_tiles(dets, iou_threshold))
    order = np.lexsort((np.arange(len(dets)), -dets.scores))
    return dets.take(order)
