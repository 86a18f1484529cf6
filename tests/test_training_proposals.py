"""Training-time RPN proposals: the fast CPU NMS keeps exactly what the detector's NMS keeps."""

from __future__ import annotations

import torch

from qgis_unravel.training.proposals import training_proposals


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
