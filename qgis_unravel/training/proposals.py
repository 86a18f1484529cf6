"""RPN proposals during training (``train_cfg.rpn_proposal``: top 2000 per level, horizontal
NMS at 0.8 per level, 2000 kept).

The result is the same as ``OrientedRPNHead.proposals``; on the CPU the NMS runs level by level
(``ops.nms``, whose dense path takes milliseconds on the crowded, near-duplicate boxes of an
RPN that is still learning) instead of once over all levels. On other devices the detector's
own path is used.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from ..ops import nms, obb2xyxy


def _single(rpn_head, cls_scores: List[Tensor], bbox_preds: List[Tensor], anchors: List[Tensor]) -> Tensor:
    cfg = rpn_head.test_cfg
    boxes_all, scores_all = [], []
    for cls, reg, anc in zip(cls_scores, bbox_preds, anchors):
        scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()
        deltas = reg.permute(1, 2, 0).reshape(-1, 6)
        if 0 < cfg.nms_pre < scores.shape[0]:
            scores, order = scores.sort(descending=True)
            scores, order = scores[: cfg.nms_pre], order[: cfg.nms_pre]
            deltas, anc = deltas[order], anc[order]
        boxes = rpn_head.bbox_coder.decode(anc, deltas)
        if cfg.min_bbox_size > 0:
            valid = (boxes[:, 2] >= cfg.min_bbox_size) & (boxes[:, 3] >= cfg.min_bbox_size)
            boxes, scores = boxes[valid], scores[valid]
        keep = nms(obb2xyxy(boxes), scores, cfg.nms_iou)
        boxes_all.append(boxes[keep])
        scores_all.append(scores[keep])
    boxes, scores = torch.cat(boxes_all), torch.cat(scores_all)
    order = torch.argsort(scores, descending=True, stable=True)[: cfg.max_per_img]
    return torch.cat([boxes[order], scores[order, None]], dim=1)


@torch.no_grad()
def training_proposals(rpn_head, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> List[Tensor]:
    """(N, 6) proposals (cx, cy, w, h, a, score) per image from detached RPN maps."""
    cls_scores = [c.detach().float() for c in cls_scores]
    bbox_preds = [b.detach().float() for b in bbox_preds]
    if cls_scores[0].device.type != "cpu":
        return rpn_head.proposals(cls_scores, bbox_preds)
    anchors = rpn_head.anchors(cls_scores)
    return [
        _single(rpn_head, [c[i] for c in cls_scores], [b[i] for b in bbox_preds], anchors)
        for i in range(cls_scores[0].shape[0])
    ]
