"""Box coders and anchors against mmrotate 0.3.4 / mmdet 2.28 (golden op_bbox_coders.npz)."""

from __future__ import annotations

import math

import golden_data
import numpy as np
import pytest
import torch

from qgis_unravel.detector.anchors import AnchorGenerator, base_anchors
from qgis_unravel.detector.coders import DeltaXYWHAOBBoxCoder, MidpointOffsetCoder


@pytest.fixture(scope="module")
def coders_npz(golden_dir):
    data = np.load(golden_dir / "op_bbox_coders.npz")
    return {k: torch.from_numpy(data[k]) for k in data.files}


def assert_boxes_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-3) -> None:
    """Centres and sizes within atol px (plus a few float32 ulps on 1000 px sizes), angles modulo pi.

    The relative term covers the last bits of exp() on large sizes, which differ between CPUs
    (seen on AMD EPYC: 4.9e-4 px on a 1098 px width, 8e-8 relative).
    """
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual[:, :4], expected[:, :4], atol=atol, rtol=1e-6)
    da = (actual[:, 4] - expected[:, 4] + math.pi / 2) % math.pi - math.pi / 2
    assert da.abs().max().item() < 1e-5


def test_midpoint_offset_decode_matches_mmrotate(coders_npz):
    out = MidpointOffsetCoder().decode(coders_npz["mp_anchors_xyxy"], coders_npz["mp_deltas"])
    assert_boxes_close(out, coders_npz["mp_decoded"], atol=1e-4)


def test_midpoint_offset_decode_clips_extreme_deltas(coders_npz):
    """Rows 0-9 need the wh-ratio clip and rows 10-19 the +-0.5 midpoint clamp."""
    anchors, deltas = coders_npz["mp_anchors_xyxy"][:20], coders_npz["mp_deltas"][:20]
    out = MidpointOffsetCoder().decode(anchors, deltas)
    assert_boxes_close(out, coders_npz["mp_decoded"][:20], atol=1e-4)
    wider = deltas.clone()
    wider[:10, 2] = 60.0  # far past the clip: same boxes
    wider[10:, 4] = 15.0
    wider[10:, 5] = -15.0
    assert_boxes_close(MidpointOffsetCoder().decode(anchors, wider), out, atol=1e-4)


def test_midpoint_offset_decoded_boxes_are_le90_with_w_ge_h(coders_npz):
    out = MidpointOffsetCoder().decode(coders_npz["mp_anchors_xyxy"], coders_npz["mp_deltas"])
    assert (out[:, 2] >= out[:, 3]).all()
    assert (out[:, 4] >= -math.pi / 2).all() and (out[:, 4] < math.pi / 2).all()


def test_midpoint_offset_encode_matches_mmrotate(coders_npz):
    out = MidpointOffsetCoder().encode(coders_npz["mp_anchors_xyxy"], coders_npz["mp_enc_gt"])
    torch.testing.assert_close(out, coders_npz["mp_encoded"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "key,max_shape", [("obb_decoded_maxshape256", (256, 256)), ("obb_decoded_nomaxshape", None)]
)
def test_delta_xywha_decode_matches_mmrotate(coders_npz, key, max_shape):
    out = DeltaXYWHAOBBoxCoder().decode(coders_npz["obb_rois"], coders_npz["obb_deltas"], max_shape)
    assert_boxes_close(out, coders_npz[key], atol=1e-4)


def test_delta_xywha_max_shape_clamps_centres_only(coders_npz):
    rois, deltas = coders_npz["obb_rois"], coders_npz["obb_deltas"]
    free = DeltaXYWHAOBBoxCoder().decode(rois, deltas)
    clamped = DeltaXYWHAOBBoxCoder().decode(rois, deltas, (100, 80))
    assert clamped[:, 0].max() <= 79 and clamped[:, 1].max() <= 99 and clamped[:, :2].min() >= 0
    torch.testing.assert_close(clamped[:, 2:], free[:, 2:])
    assert (free[:, 0] > 79).any()  # the clamp was exercised


def test_delta_xywha_encode_matches_mmrotate(coders_npz):
    out = DeltaXYWHAOBBoxCoder().encode(coders_npz["obb_rois"], coders_npz["obb_enc_gt"])
    torch.testing.assert_close(out, coders_npz["obb_encoded"], atol=1e-4, rtol=1e-4)


def test_delta_xywha_encode_then_decode_recovers_targets(coders_npz):
    coder = DeltaXYWHAOBBoxCoder()
    rois, gt = coders_npz["obb_rois"], coders_npz["obb_enc_gt"]
    back = coder.decode(rois, coder.encode(rois, gt))
    # decode returns w >= h; express the targets the same way before comparing
    swap = gt[:, 2] < gt[:, 3]
    expected = gt.clone()
    expected[swap, 2], expected[swap, 3] = gt[swap, 3], gt[swap, 2]
    expected[swap, 4] = expected[swap, 4] + math.pi / 2
    assert_boxes_close(back, expected, atol=1e-3)


def test_anchor_grid_matches_mmdet(golden_dir):
    io = np.load(golden_dir / "reduced_model_io.npz")
    sizes = [io[f"fpn_out{i}"].shape[1:] for i in range(5)]
    anchors = AnchorGenerator()(sizes, torch.device("cpu"))
    for level, grid in enumerate(anchors):
        torch.testing.assert_close(*golden_data.compared(grid, io, f"rpn_anchors_l{level}"), atol=0, rtol=0)


def test_base_anchors_keep_area_across_ratios():
    base = base_anchors(16, [8.0], [0.5, 1.0, 2.0])
    w, h = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    torch.testing.assert_close(w * h, torch.full((3,), 128.0 * 128.0))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0]))
