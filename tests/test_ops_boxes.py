"""Box conversions match mmrotate 0.3.4's le90 torch functions (golden op_transforms.npz)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qgis_unravel.ops import norm_angle, obb2poly, obb2xyxy, poly2obb


@pytest.fixture(scope="module")
def transforms(golden_dir):
    return np.load(golden_dir / "op_transforms.npz")


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Difference of angles modulo pi (the README's rule for comparing le90 angles)."""
    return np.abs((a - b + np.pi / 2) % np.pi - np.pi / 2)


def test_obb2poly_matches_mmrotate(transforms):
    polys = obb2poly(torch.from_numpy(transforms["obb"])).numpy()
    np.testing.assert_allclose(polys, transforms["obb2poly_le90"], atol=1e-4, rtol=0)


def test_obb2xyxy_matches_mmrotate(transforms):
    xyxy = obb2xyxy(torch.from_numpy(transforms["obb"])).numpy()
    np.testing.assert_allclose(xyxy, transforms["obb2xyxy_le90"], atol=1e-4, rtol=0)


def test_poly2obb_follows_point_order_like_mmrotate(transforms):
    obb = poly2obb(torch.from_numpy(transforms["polys"])).numpy()
    ref = transforms["poly2obb_le90"]
    np.testing.assert_allclose(obb[:, :4], ref[:, :4], atol=1e-3, rtol=0)
    assert _angle_diff(obb[:, 4], ref[:, 4]).max() < 1e-5


def test_norm_angle_wraps_into_le90(transforms):
    out = norm_angle(torch.from_numpy(transforms["norm_angle_in"])).numpy()
    np.testing.assert_allclose(out, transforms["norm_angle_le90"], atol=1e-6, rtol=0)
    assert out.min() >= -math.pi / 2 - 1e-6 and out.max() < math.pi / 2


def test_poly_roundtrip_recovers_long_side_boxes():
    g = torch.Generator().manual_seed(3)
    w = torch.rand(64, generator=g) * 90 + 10
    h = w * (torch.rand(64, generator=g) * 0.9 + 0.05)
    a = torch.rand(64, generator=g) * math.pi - math.pi / 2
    ctr = torch.rand(64, 2, generator=g) * 500
    boxes = torch.cat([ctr, w[:, None], h[:, None], a[:, None]], dim=1)
    back = poly2obb(obb2poly(boxes))
    torch.testing.assert_close(back[:, :4], boxes[:, :4], atol=1e-3, rtol=0)
    assert _angle_diff(back[:, 4].numpy(), a.numpy()).max() < 1e-5


def test_xyxy_encloses_every_corner():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 8.0, 0.7], [0.0, 0.0, 5.0, 5.0, -1.2]])
    poly = obb2poly(boxes).reshape(-1, 4, 2)
    xyxy = obb2xyxy(boxes)
    torch.testing.assert_close(poly.amin(1), xyxy[:, :2], atol=1e-4, rtol=0)
    torch.testing.assert_close(poly.amax(1), xyxy[:, 2:], atol=1e-4, rtol=0)


def test_bad_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        obb2poly(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        poly2obb(torch.zeros(3, 5))
