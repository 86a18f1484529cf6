"""RoI head (level mapping, rotated RoIAlign, 2-FC head, NMS) against the golden mmrotate run."""

from __future__ import annotations

import math

import golden_data
import numpy as np
import pytest
import torch

from qgis_unravel.detector.roi_head import OrientedRoIHead, map_roi_levels, rois_from_proposals
from qgis_unravel.detector.state_dict import strip_prefix


@pytest.fixture(scope="module")
def golden_thr(golden_info) -> float:
    """The score threshold the golden run used (chosen by the generator, see docs/golden.md)."""
    return golden_info["unravelnet"]["score_thr"]


@pytest.fixture(scope="module")
def head(reduced_golden, golden_thr):
    sd, _ = reduced_golden
    roi = OrientedRoIHead(64, 128, 15).eval()
    roi.load_state_dict(strip_prefix(sd, "roi_head."))
    roi.test_cfg.score_thr = golden_thr
    return roi


@pytest.fixture(scope="module")
def feats(reduced_golden):
    _, io = reduced_golden
    return [torch.from_numpy(io[f"fpn_out{i}"])[None] for i in range(5)]


@pytest.fixture(scope="module")
def rois(reduced_golden):
    _, io = reduced_golden
    return rois_from_proposals([torch.from_numpy(io["proposals"])])


@pytest.fixture(scope="module")
def raw(head, feats, rois):
    with torch.inference_mode():
        return head(feats, rois)


def assert_dets_close(boxes, scores, expected: np.ndarray) -> None:
    expected_t = torch.from_numpy(expected)
    assert boxes.shape == (expected.shape[0], 5)
    if expected.shape[0] == 0:
        return
    torch.testing.assert_close(boxes[:, :4], expected_t[:, :4], atol=1e-3, rtol=0)
    da = (boxes[:, 4] - expected_t[:, 4] + math.pi / 2) % math.pi - math.pi / 2
    assert da.abs().max().item() < 1e-4
    torch.testing.assert_close(scores, expected_t[:, 5], atol=1e-5, rtol=0)


def test_roi_levels_match_mmrotate(reduced_golden, rois):
    _, io = reduced_golden
    levels = map_roi_levels(rois, 4)
    assert torch.equal(levels, torch.from_numpy(io["roi_levels"]))
    assert len(set(levels.tolist())) > 1  # several levels are exercised


def test_roi_level_thresholds():
    sizes = torch.tensor([10.0, 56.0, 111.9, 112.0, 224.0, 448.0, 5000.0])
    rois = torch.zeros((len(sizes), 6))
    rois[:, 3] = sizes
    rois[:, 4] = sizes
    assert map_roi_levels(rois, 4).tolist() == [0, 0, 0, 1, 2, 3, 3]


def test_roi_features_match_mmrotate(reduced_golden, head, feats, rois):
    """Features of every RoI (all four levels), compared at the golden file's sampled positions."""
    _, io = reduced_golden
    with torch.inference_mode():
        out = head.extract(feats, rois)
    torch.testing.assert_close(*golden_data.compared(out, io, "roi_feats"), atol=1e-4, rtol=1e-4)


def test_box_head_outputs_match_mmrotate(reduced_golden, raw):
    _, io = reduced_golden
    cls_score, bbox_pred = raw
    torch.testing.assert_close(*golden_data.compared(cls_score, io, "roi_cls_score"), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(*golden_data.compared(bbox_pred, io, "roi_bbox_pred"), atol=1e-4, rtol=1e-4)


def test_detections_match_mmrotate(reduced_golden, head, rois, raw):
    _, io = reduced_golden
    with torch.inference_mode():
        ((boxes, scores, labels),) = head.postprocess(rois, *raw, [(256, 256)])
    assert_dets_close(boxes, scores, io["det_bboxes"])
    assert torch.equal(labels, torch.from_numpy(io["det_labels"]))


def test_detections_per_class_match_simple_test(reduced_golden, head, rois, raw):
    _, io = reduced_golden
    with torch.inference_mode():
        ((boxes, scores, labels),) = head.postprocess(rois, *raw, [(256, 256)])
    for cls in range(15):
        mask = labels == cls
        assert_dets_close(boxes[mask], scores[mask], io[f"det_cls{cls:02d}"])


def test_postprocess_keeps_images_apart(reduced_golden, head, feats, rois):
    """Two images in one batch: the second's RoIs pool from the second map, NMS stays per image."""
    _, io = reduced_golden
    feats2 = [torch.cat([torch.zeros_like(f), f]) for f in feats]
    two = torch.cat([rois[:500], rois])
    two[:500, 0] = 0
    two[500:, 0] = 1
    with torch.inference_mode():
        raw2 = head(feats2, two)
        dets = head.postprocess(two, *raw2, [(256, 256), (256, 256)])
    assert len(dets) == 2
    boxes, scores, _ = dets[1]
    assert_dets_close(boxes, scores, io["det_bboxes"])


def test_score_threshold_and_max_per_img_are_applied(reduced_golden, golden_thr, head, rois, raw):
    _, io = reduced_golden
    head.test_cfg.max_per_img = 10
    try:
        with torch.inference_mode():
            ((boxes, scores, _),) = head.postprocess(rois, *raw, [(256, 256)])
    finally:
        head.test_cfg.max_per_img = 2000
    assert_dets_close(boxes, scores, io["det_bboxes"][:10])
    head.test_cfg.score_thr = 0.99
    try:
        with torch.inference_mode():
            ((boxes, scores, labels),) = head.postprocess(rois, *raw, [(256, 256)])
    finally:
        head.test_cfg.score_thr = golden_thr
    assert boxes.shape == (0, 5) and scores.shape == (0,) and labels.shape == (0,)


def test_box_head_key_names_match_mmrotate(golden_dir):
    listed = {}
    for line in (golden_dir / "state_dict_keys_tiny.txt").read_text().splitlines():
        key, shape, _ = line.split("\t")
        if key.startswith("roi_head."):
            listed[key[len("roi_head.") :]] = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
    built = {k: list(v.shape) for k, v in OrientedRoIHead(256, 1024, 15).state_dict().items()}
    assert built == listed
