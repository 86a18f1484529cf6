"""Merging tiles: the seam rule and the cross-tile per-class rotated NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qgis_unravel.engine.merge import (
    TileDetections,
    merge,
    nms_across_tiles,
    shift,
)
from qgis_unravel.engine.windows import tile_grid
from qgis_unravel.ops import batched_nms_rotated


def _random_boxes(n: int, extent: float, seed: int):
    rng = np.random.default_rng(seed)
    boxes = np.stack([
        rng.uniform(0, extent, n), rng.uniform(0, extent, n),
        rng.uniform(10, 80, n), rng.uniform(5, 30, n), rng.uniform(-np.pi / 2, np.pi / 2, n),
    ], axis=1)
    return boxes, rng.uniform(0.05, 1, n).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_tile_nms_equals_global_greedy_rotated_nms(seed):
    boxes, scores, labels = _random_boxes(400, 800, seed)
    boxes[:, :2] += 40000.0  # raster coordinates far from the origin must not hurt
    from qgis_unravel.engine.merge import Detections

    dets = Detections(boxes, scores, labels, np.zeros(len(boxes), np.int64))
    keep = np.flatnonzero(nms_across_tiles(dets, 0.1))
    ref = batched_nms_rotated(torch.from_numpy(boxes - [40000.0, 40000.0, 0, 0, 0]).float(),
                              torch.from_numpy(scores), torch.from_numpy(labels), 0.1)
    assert set(keep.tolist()) == set(ref.tolist())
    assert 0 < len(keep) < len(boxes)


def _two_tiles():
    grid = tile_grid(448, 256, 256, 64)  # tiles x 0..256 and 192..448
    assert len(grid.tiles) == 2
    return grid, grid.tiles[0], grid.tiles[1]


def test_seam_rule_keeps_the_whole_object_from_the_neighbour_tile():
    grid, left, right = _two_tiles()
    # an object spanning x 230..290: the left tile sees 230..256 (cut, scored higher),
    # the right tile sees all of it
    cut = TileDetections(left, np.array([[243.0, 100, 26, 10, 0]]), np.array([0.9]), np.array([1]))
    whole = TileDetections(right, np.array([[260.0 - 192, 100, 60, 10, 0]]), np.array([0.6]), np.array([1]))
    merged = merge([cut, whole], grid, [0, 1], 0.1, seam_rule=True)
    assert len(merged) == 1
    assert merged.boxes[0].tolist() == [260.0, 100, 60, 10, 0]
    plain = merge([cut, whole], grid, [0, 1], 0.1, seam_rule=False)
    assert len(plain) == 1 and plain.boxes[0, 0] == 243.0  # NMS alone keeps the cut half


def test_seam_rule_keeps_cut_detections_nobody_sees_whole():
    grid, left, right = _two_tiles()
    # longer than the overlap: cut in both tiles, so both survive the seam rule; NMS picks one
    a = TileDetections(left, np.array([[200.0, 50, 112, 10, 0]]), np.array([0.7]), np.array([0]))
    b = TileDetections(right, np.array([[262.0 - 192, 50, 140, 10, 0]]), np.array([0.8]), np.array([0]))
    merged = merge([a, b], grid, [0, 1], 0.1)
    assert len(merged) == 1 and merged.scores[0] == pytest.approx(0.8)
    # a neighbour that was not processed (nodata, outside the AOI, cancelled) holds nothing
    cut = TileDetections(left, np.array([[243.0, 100, 26, 10, 0]]), np.array([0.9]), np.array([1]))
    merged = merge([cut], grid, [0], 0.1)
    assert len(merged) == 1


def test_shift_moves_boxes_into_raster_pixels_and_keeps_order_by_score():
    grid, left, right = _two_tiles()
    parts = [TileDetections(left, np.array([[10.0, 20, 8, 4, 0.3]]), np.array([0.5]), np.array([2])),
             TileDetections(right, np.array([[10.0, 20, 8, 4, 0.3]]), np.array([0.7]), np.array([2]))]
    dets = shift(parts)
    assert dets.boxes[:, 0].tolist() == [10.0, 202.0] and dets.tiles.tolist() == [0, 1]
    merged = merge(parts, grid, [0, 1], 0.1)
    assert merged.scores.tolist() == pytest.approx([0.7, 0.5])
