"""Rotated IoU matches mmcv 1.7.2's box_iou_rotated (golden op_box_iou_rotated.npz) and geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qgis_unravel.ops import box_iou_rotated


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "op_box_iou_rotated.npz")


def _random_boxes(n: int, seed: int, spread: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ctr = torch.rand(n, 2, generator=g) * spread
    wh = torch.rand(n, 2, generator=g) * 40 + 2
    a = torch.rand(n, 1, generator=g) * math.pi - math.pi / 2
    return torch.cat([ctr, wh, a], dim=1)


@pytest.mark.parametrize("mode", ["iou", "iof"])
def test_matches_mmcv(golden, mode):
    out = box_iou_rotated(torch.from_numpy(golden["boxes1"]), torch.from_numpy(golden["boxes2"]), mode)
    assert out.shape == (30, 40) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), golden[mode], atol=1e-5, rtol=0)


def test_aligned_matches_mmcv(golden):
    b1 = torch.from_numpy(golden["boxes1"])
    b2 = torch.from_numpy(golden["boxes2"][:30])
    out = box_iou_rotated(b1, b2, aligned=True)
    assert out.shape == (30,)
    np.testing.assert_allclose(out.numpy(), golden["iou_aligned_first30"], atol=1e-5, rtol=0)


def test_identical_boxes_have_iou_one_even_when_axis_aligned():
    boxes = torch.tensor(
        [[50.0, 50.0, 20.0, 10.0, 0.0], [5.0, 7.0, 3.0, 3.0, 0.3], [0.0, 0.0, 8.0, 2.0, -math.pi / 2]]
    )
    out = box_iou_rotated(boxes, boxes, aligned=True)
    torch.testing.assert_close(out, torch.ones(3), atol=1e-5, rtol=0)


def test_known_geometry():
    # Two axis-aligned 10x10 squares offset by 5 px: intersection 50, union 150.
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0]])
    b = torch.tensor([[5.0, 0.0, 10.0, 10.0, 0.0]])
    assert box_iou_rotated(a, b).item() == pytest.approx(1 / 3, abs=1e-6)
    # A square and the same square turned by 45 degrees: the octagon has area 200*(sqrt(2)-1).
    c = torch.tensor([[0.0, 0.0, 10.0, 10.0, math.pi / 4]])
    inter = 100 * 2 * (math.sqrt(2) - 1)
    assert box_iou_rotated(a, c).item() == pytest.approx(inter / (200 - inter), abs=1e-5)
    # Boxes that only touch along an edge, or are far apart, do not overlap.
    d = torch.tensor([[10.0, 0.0, 10.0, 10.0, 0.0], [100.0, 100.0, 10.0, 10.0, 0.3]])
    assert box_iou_rotated(a, d).abs().max().item() < 1e-6
    # iof of a small box inside a big one is 1.
    small = torch.tensor([[1.0, 1.0, 2.0, 3.0, 0.4]])
    assert box_iou_rotated(small, a, mode="iof").item() == pytest.approx(1.0, abs=1e-5)


def test_symmetric_and_self_one():
    boxes = _random_boxes(60, seed=1)
    iou = box_iou_rotated(boxes, boxes)
    torch.testing.assert_close(iou, iou.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(iou.diagonal(), torch.ones(60), atol=1e-5, rtol=0)
    assert iou.min() >= 0 and iou.max() <= 1 + 1e-5


def test_angle_period_pi_and_swap_of_sides_give_same_box():
    boxes = _random_boxes(40, seed=2)
    turned = boxes.clone()
    turned[:, 4] += math.pi
    swapped = boxes[:, [0, 1, 3, 2, 4]].clone()
    swapped[:, 4] += math.pi / 2
    others = _random_boxes(40, seed=3)
    ref = box_iou_rotated(boxes, others)
    torch.testing.assert_close(box_iou_rotated(turned, others), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(box_iou_rotated(swapped, others), ref, atol=1e-5, rtol=0)


def test_degenerate_boxes_give_zero():
    a = torch.tensor([[0.0, 0.0, 0.0, 10.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0]])
    assert box_iou_rotated(a, b).item() == 0.0


def test_empty_inputs_and_bad_mode():
    assert box_iou_rotated(torch.zeros(0, 5), _random_boxes(3, 0)).shape == (0, 3)
    with pytest.raises(ValueError, match="mode"):
        box_iou_rotated(_random_boxes(2, 0), _random_boxes(2, 1), mode="giou")
    with pytest.raises(ValueError, match="aligned"):
        box_iou_rotated(_random_boxes(2, 0), _random_boxes(3, 1), aligned=True)


@pytest.mark.parametrize("shift,expected", [(1.0, 0.0), (0.5, 1 / 3), (0.0, 1.0)])
def test_boxes_sharing_an_edge_line(shift, expected):
    # Same-angle boxes moved along their own width: collinear edges must not invent crossings.
    boxes = _random_boxes(500, seed=4, spread=1000.0)
    a = boxes[:, 4]
    moved = boxes.clone()
    moved[:, 0] += shift * boxes[:, 2] * torch.cos(a)
    moved[:, 1] += shift * boxes[:, 2] * torch.sin(a)
    iou = box_iou_rotated(boxes, moved, aligned=True)
    torch.testing.assert_close(iou, torch.full_like(iou, expected), atol=1e-4, rtol=0)
