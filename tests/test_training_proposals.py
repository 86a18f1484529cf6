"""Training-time RPN proposals: the fast CPU NMS keeps exactly what the detector's NMS keeps."""

from __future__ import annotations

import torch

from qgis_unravel.ops.nms import nms
from qgis_unravel.training.proposals import greedy_nms, training_proposals


def _crowded_boxes(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 60
    # Many near-duplicates, like an RPN that is still learning.
    centres = torch.cat([centres, centres + torch.randn(n, 2, generator=g) * 0.8])
    wh = torch.rand(len(centres), 2, generator=g) * 20 + 10
    boxes = torch.cat([centres - wh / 2, centres + wh / 2], dim=1)
    return boxes, torch.rand(len(boxes), generator=g)


def test_greedy_nms_equals_the_reference_nms():
    for seed in range(2):
        boxes, scores = _crowded_boxes(120, seed)
        for thr in (0.5, 0.8):
            assert greedy_nms(boxes, scores, thr).tolist() == nms(boxes, scores, thr).tolist()


def test_training_proposals_equal_the_detectors_proposals():
    from qgis_unravel.detector.rpn import OrientedRPNHead

    torch.manual_seed(0)
    head = OrientedRPNHead(8, 8).eval()
    feats = [torch.randn(2, 8, s, s) for s in (32, 16, 8, 4, 2)]
    with torch.no_grad():
        cls_scores, bbox_preds = head(feats)
        cls_scores = [c * 4 for c in cls_scores]  # spread the scores
        bbox_preds = [b * 10 for b in bbox_preds]
        ours = training_proposals(head, cls_scores, bbox_preds)
        ref = head.proposals(cls_scores, bbox_preds)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and a.shape[1] == 6
        assert torch.allclose(a, b, atol=1e-5)
