"""Assignment, sampling, targets and losses of both stages (mmrotate's Oriented R-CNN rules)."""

from __future__ import annotations

import math

import pytest
import torch

from qgis_unravel.training.assign import (
    RCNN_ASSIGNER,
    RPN_ASSIGNER,
    MaxIoUConfig,
    max_iou_assign,
    random_sample,
)
from qgis_unravel.training.losses import smooth_l1, weighted_bce
from qgis_unravel.training.targets import (
    RCNN_SAMPLES,
    RPN_SAMPLES,
    box_iou_xyxy,
    inside_image,
    rcnn_loss,
    rpn_targets_single,
    sample_rois_single,
)


def test_max_iou_assigner_thresholds_and_low_quality_matches():
    # 2 objects x 5 candidates.
    overlaps = torch.tensor(
        [
            [0.80, 0.50, 0.10, 0.00, 0.35],
            [0.00, 0.20, 0.25, 0.40, 0.00],
        ]
    )
    got = max_iou_assign(overlaps, RPN_ASSIGNER)
    # 0: >= 0.7 -> object 1; 1: between 0.3 and 0.7 -> ignored; 2: < 0.3 -> background;
    # 3: object 2's best (0.40 >= min_pos_iou 0.3) -> low-quality positive; 4: ignored (0.35).
    assert got.tolist() == [1, -1, 0, 2, -1]


def test_low_quality_match_needs_min_pos_iou_and_takes_every_tie():
    overlaps = torch.tensor([[0.25, 0.1, 0.25]])
    assert max_iou_assign(overlaps, RPN_ASSIGNER).tolist() == [0, 0, 0]
    overlaps = torch.tensor([[0.5, 0.1, 0.5]])
    assert max_iou_assign(overlaps, RPN_ASSIGNER).tolist() == [1, 0, 1]
    single = MaxIoUConfig(0.7, 0.3, 0.3, True, gt_max_assign_all=False)
    assert max_iou_assign(overlaps, single).tolist() == [1, 0, -1]


def test_rcnn_assigner_has_no_low_quality_matches():
    overlaps = torch.tensor([[0.49, 0.5, 0.2]])
    assert max_iou_assign(overlaps, RCNN_ASSIGNER).tolist() == [0, 1, 0]


def test_assigner_without_objects_makes_everything_background():
    assert max_iou_assign(torch.zeros((0, 4)), RPN_ASSIGNER).tolist() == [0, 0, 0, 0]


def test_random_sampler_caps_positives_and_fills_with_negatives():
    assigned = torch.cat([torch.ones(300, dtype=torch.long), torch.zeros(1000, dtype=torch.long)])
    gen = torch.Generator().manual_seed(0)
    pos, neg = random_sample(assigned, 256, 0.5, gen)
    assert pos.numel() == 128 and neg.numel() == 128
    few = torch.cat([torch.ones(10, dtype=torch.long), torch.zeros(1000, dtype=torch.long)])
    pos, neg = random_sample(few, 256, 0.5, gen)
    assert pos.numel() == 10 and neg.numel() == 246
    assert set(pos.tolist()) == set(range(10)) and bool((neg >= 10).all())


def test_horizontal_iou_and_inside_flags():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_iou_xyxy(a, b).tolist() == [[pytest.approx(50 / 150), 0.0]]
    anchors = torch.tensor([[0.0, 0.0, 31.9, 31.9], [-1.0, 0.0, 20.0, 20.0], [0.0, 0.0, 32.0, 10.0]])
    assert inside_image(anchors, 32, 32).tolist() == [True, False, False]


def test_smooth_l1_and_bce_values():
    pred = torch.tensor([0.0, 0.0])
    target = torch.tensor([0.05, 2.0])
    beta = 1.0 / 9.0
    assert smooth_l1(pred, target, beta).tolist() == pytest.approx([0.5 * 0.05**2 / beta, 2.0 - 0.5 * beta])
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 0.0])
    weights = torch.tensor([1.0, 1.0, 0.0])  # the third is not sampled
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 4
    assert float(weighted_bce(logits, labels, weights, 4.0)) == pytest.approx(expected, rel=1e-6)


def _rpn_setup():
    from qgis_unravel.detector.anchors import AnchorGenerator
    from qgis_unravel.detector.coders import MidpointOffsetCoder

    sizes = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    anchors = torch.cat(AnchorGenerator()(sizes, torch.device("cpu")))
    gts = torch.tensor([[40.0, 50.0, 40.0, 16.0, 0.4], [90.0, 80.0, 30.0, 30.0, 0.0]])
    return anchors, gts, MidpointOffsetCoder()


def test_rpn_targets_sample_256_anchors_with_positives_on_each_object():
    anchors, gts, coder = _rpn_setup()
    t = rpn_targets_single(anchors, gts, (128, 128), coder, torch.Generator().manual_seed(0))
    pos = torch.nonzero(t.labels > 0).flatten()
    assert t.num_samples == RPN_SAMPLES
    assert int(t.label_weights.sum()) == RPN_SAMPLES
    assert 2 <= pos.numel() <= RPN_SAMPLES // 2
    # Only anchors wholly inside the image are ever sampled.
    assert bool(inside_image(anchors[t.label_weights > 0], 128, 128).all())
    # The regression targets decode back onto an object.
    decoded = coder.decode(anchors[pos], t.bbox_targets[pos])
    centres = decoded[:, :2]
    dist = torch.cdist(centres, gts[:, :2]).min(dim=1).values
    assert float(dist.max()) < 1e-3
    assert bool((t.bbox_weights[pos] == 1).all()) and float(t.bbox_weights.sum()) == 6 * pos.numel()


def test_rpn_targets_without_objects_are_all_negative():
    anchors, _, coder = _rpn_setup()
    t = rpn_targets_single(anchors, torch.zeros((0, 5)), (128, 128), coder)
    assert float(t.labels.sum()) == 0 and t.num_samples == RPN_SAMPLES


def test_rcnn_sampling_adds_the_objects_and_encodes_their_targets():
    from qgis_unravel.detector.coders import DeltaXYWHAOBBoxCoder

    coder = DeltaXYWHAOBBoxCoder(stds=(0.1, 0.1, 0.2, 0.2, 0.1))
    gts = torch.tensor([[40.0, 50.0, 40.0, 16.0, 0.4], [90.0, 80.0, 30.0, 30.0, 0.0]])
    labels = torch.tensor([3, 1])
    g = torch.Generator().manual_seed(0)
    near = gts[0:1].repeat(5, 1) + torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    far = torch.rand(900, 5, generator=g) * torch.tensor([120.0, 120.0, 30.0, 20.0, 1.0]) + torch.tensor(
        [0.0, 0.0, 4.0, 4.0, -0.5]
    )
    proposals = torch.cat([near, far])
    proposals = torch.cat([proposals, torch.rand(len(proposals), 1, generator=g)], dim=1)
    s = sample_rois_single(proposals, gts, labels, 5, coder, 1, g)
    assert s.rois.shape == (RCNN_SAMPLES, 6) and bool((s.rois[:, 0] == 1).all())
    assert 7 <= s.num_pos <= RCNN_SAMPLES // 4
    # Positives come first, with their objects' labels; the rest are background (= 5).
    assert set(s.labels[: s.num_pos].tolist()) == {1, 3}
    assert bool((s.labels[s.num_pos :] == 5).all())
    # The objects themselves are among the positives, with zero targets.
    exact = (s.rois[: s.num_pos, 1:] - gts[0]).abs().sum(1) < 1e-6
    assert bool(exact.any())
    assert float(s.bbox_targets[: s.num_pos][exact].abs().max()) < 1e-6
    decoded = coder.decode(s.rois[: s.num_pos, 1:], s.bbox_targets[: s.num_pos])
    assert float(torch.cdist(decoded[:, :2], gts[:, :2]).min(1).values.max()) < 1e-3


def test_rcnn_loss_averages_over_all_sampled_rois():
    from qgis_unravel.training.targets import RoISamples

    samples = [
        RoISamples(
            torch.zeros((4, 6)),
            torch.tensor([0, 2, 2, 2]),
            torch.tensor([[1.0, 0, 0, 0, 0]] + [[0.0] * 5] * 3),
            1,
        )
    ]
    cls_score = torch.zeros((4, 3))
    bbox_pred = torch.zeros((4, 5))
    losses = rcnn_loss(cls_score, bbox_pred, samples, num_classes=2)
    assert float(losses["loss_cls"]) == pytest.approx(math.log(3))
    assert float(losses["loss_bbox"]) == pytest.approx(0.5 / 4)  # smooth L1 (beta 1) of 1, over 4 RoIs
