"""Rotated RoI Align matches mmcv 1.7.2's CPU kernel (golden op_roi_align_rotated.npz)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qgis_unravel.ops import roi_align_rotated


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "op_roi_align_rotated.npz")


@pytest.mark.parametrize("stride", [4, 8])
@pytest.mark.parametrize("clockwise", [True, False])
def test_matches_mmcv(golden, stride, clockwise):
    feats = torch.from_numpy(golden[f"feat_s{stride}"])
    rois = torch.from_numpy(golden["rois"])
    out = roi_align_rotated(feats, rois, 7, 1.0 / stride, sampling_ratio=2, aligned=True, clockwise=clockwise)
    ref = golden[f"out_s{stride}_clockwise{int(clockwise)}"]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-5, rtol=0)


def _pixel_loop_reference(feat, roi, out_size, scale, ratio, aligned, clockwise):
    """A direct, loop-per-sample transcription of the kernel's rules for one RoI (slow, obvious)."""
    _, c, h, w = feat.shape
    b, cx, cy, rw, rh, a = roi.tolist()
    off = 0.5 if aligned else 0.0
    cx, cy, rw, rh = cx * scale - off, cy * scale - off, rw * scale, rh * scale
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    theta = -a if clockwise else a
    gh = ratio if ratio > 0 else math.ceil(rh / out_size)
    gw = ratio if ratio > 0 else math.ceil(rw / out_size)
    out = torch.zeros(c, out_size, out_size, dtype=torch.float64)
    f = feat[int(b)].double()
    for ph in range(out_size):
        for pw in range(out_size):
            acc = torch.zeros(c, dtype=torch.float64)
            for iy in range(gh):
                yy = -rh / 2 + ph * rh / out_size + (iy + 0.5) * rh / out_size / gh
                for ix in range(gw):
                    xx = -rw / 2 + pw * rw / out_size + (ix + 0.5) * rw / out_size / gw
                    y = yy * math.cos(theta) - xx * math.sin(theta) + cy
                    x = yy * math.sin(theta) + xx * math.cos(theta) + cx
                    if y < -1 or y > h or x < -1 or x > w:
                        continue
                    y, x = max(y, 0.0), max(x, 0.0)
                    y0, x0 = int(y), int(x)
                    y1, x1 = y0 + 1, x0 + 1
                    if y0 >= h - 1:
                        y0 = y1 = h - 1
                        y = float(y0)
                    if x0 >= w - 1:
                        x0 = x1 = w - 1
                        x = float(x0)
                    ly, lx = y - y0, x - x0
                    acc += (1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, x1]
                    acc += ly * (1 - lx) * f[:, y1, x0] + ly * lx * f[:, y1, x1]
            out[:, ph, pw] = acc / max(gh * gw, 1)
    return out.float()


@pytest.mark.parametrize("ratio,aligned", [(0, True), (3, False), (1, True)])
def test_adaptive_grid_and_legacy_mode_follow_the_kernel_rules(ratio, aligned):
    g = torch.Generator().manual_seed(ratio)
    feat = torch.randn(2, 3, 12, 10, generator=g)
    rois = torch.tensor(
        [
            [1, 20.0, 15.0, 30.0, 9.0, 0.4],
            [0, -3.0, 44.0, 2.0, 1.0, -1.1],
            [1, 39.0, 47.0, 60.0, 25.0, 1.5],
            [0, 12.0, 20.0, 0.0, 14.0, 0.2],  # empty: no samples with an adaptive grid when aligned
        ]
    )
    out = roi_align_rotated(feat, rois, 3, 0.25, sampling_ratio=ratio, aligned=aligned)
    for k in range(rois.shape[0]):
        ref = _pixel_loop_reference(feat, rois[k], 3, 0.25, ratio, aligned, True)
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)


def test_chunking_does_not_change_results(golden, monkeypatch):
    import importlib

    module = importlib.import_module("qgis_unravel.ops.roi_align_rotated")
    feats = torch.from_numpy(golden["feat_s8"])
    rois = torch.from_numpy(golden["rois"])
    whole = roi_align_rotated(feats, rois, 7, 0.125)
    monkeypatch.setattr(module, "_GATHER_BUDGET", 1)
    torch.testing.assert_close(roi_align_rotated(feats, rois, 7, 0.125), whole, atol=0, rtol=0)


def test_axis_aligned_roi_on_a_linear_ramp_reads_the_ramp():
    # Bilinear interpolation is exact on a linear function: the bin means are the ramp at bin centres.
    h, w = 16, 20
    ramp = torch.arange(w, dtype=torch.float32).repeat(h, 1)[None, None]
    rois = torch.tensor([[0, 10.0, 8.0, 8.0, 4.0, 0.0]])
    out = roi_align_rotated(ramp, rois, (2, 4), 1.0, sampling_ratio=2, aligned=True)
    # centre 10 - 0.5 (aligned), width 8: bins centred at x = 6.5, 8.5, 10.5, 12.5.
    expected = torch.tensor([6.5 + 2 * i for i in range(4)])
    torch.testing.assert_close(out[0, 0], expected.repeat(2, 1), atol=1e-5, rtol=0)


def test_empty_rois_and_bad_input():
    feat = torch.zeros(1, 4, 8, 8)
    assert roi_align_rotated(feat, torch.zeros(0, 6), 7, 0.25).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match=r"\(K, 6\)"):
        roi_align_rotated(feat, torch.zeros(3, 5), 7, 0.25)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align_rotated(feat, torch.tensor([[1.0, 4, 4, 2, 2, 0]]), 7, 0.25)


def test_gradient_flows_to_features_for_training():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 12.0, 10.0, 14.0, 6.0, 0.5], [0, 3.0, 20.0, 9.0, 9.0, -1.0]]).double()
    assert torch.autograd.gradcheck(lambda f: roi_align_rotated(f, rois, 2, 0.25), (feat,))
    # With gradients on, the result equals the inference path.
    with torch.no_grad():
        plain = roi_align_rotated(feat, rois, 2, 0.25)
    torch.testing.assert_close(roi_align_rotated(feat, rois, 2, 0.25).detach(), plain)
