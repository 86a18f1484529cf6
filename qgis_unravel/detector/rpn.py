"""Oriented RPN head: objectness and midpoint-offset deltas per anchor, then proposals.

``forward`` returns the raw per-level maps (the trainer computes its losses on them);
``proposals`` turns them into oriented proposals exactly as mmrotate's
``OrientedRPNHead._get_bboxes_single`` does at test time.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import batched_nms, obb2xyxy
from .anchors import AnchorGenerator
from .coders import MidpointOffsetCoder
from .config import RPNTestConfig

NUM_DELTAS = 6


class OrientedRPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 convs for sigmoid logits and 6 deltas per anchor."""

    def __init__(self, in_channels: int, feat_channels: int, num_anchors: int = 3) -> None:
        super().__init__()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * NUM_DELTAS, 1)
        self.num_anchors = num_anchors
        self.anchor_generator = AnchorGenerator()
        self.bbox_coder = MidpointOffsetCoder()
        self.test_cfg = RPNTestConfig()

    def forward(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level: logits (B, K, H, W) and deltas (B, K*6, H, W); channel k*6+j = delta j."""
        cls_scores, bbox_preds = [], []
        for feat in feats:
            x = F.relu(self.rpn_conv(feat), inplace=True)  # the conv output is a fresh tensor
            cls_scores.append(self.rpn_cls(x))
            bbox_preds.append(self.rpn_reg(x))
        return cls_scores, bbox_preds

    def anchors(self, cls_scores: Sequence[Tensor]) -> List[Tensor]:
        """Anchors (H*W*K, 4) per level for these prediction maps."""
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        return self.anchor_generator(sizes, cls_scores[0].device)

    def proposals(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> List[Tensor]:
        """One (N, 6) tensor (cx, cy, w, h, a, score) per image, sorted by score."""
        anchors = self.anchors(cls_scores)
        batch = cls_scores[0].shape[0]
        return [
            self._proposals_single([c[i] for c in cls_scores], [b[i] for b in bbox_preds], anchors)
            for i in range(batch)
        ]

    def _proposals_single(
        self, cls_scores: List[Tensor], bbox_preds: List[Tensor], anchors: List[Tensor]
    ) -> Tensor:
        cfg = self.test_cfg
        scores_all, deltas_all, anchors_all, levels = [], [], [], []
        for level, (cls, reg, anc) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = reg.permute(1, 2, 0).reshape(-1, NUM_DELTAS)
            if 0 < cfg.nms_pre < scores.shape[0]:
                scores, order = scores.sort(descending=True)
                scores, order = scores[: cfg.nms_pre], order[: cfg.nms_pre]
                deltas, anc = deltas[order], anc[order]
            scores_all.append(scores)
            deltas_all.append(deltas)
            anchors_all.append(anc)
            levels.append(torch.full_like(scores, level, dtype=torch.long))
        scores = torch.cat(scores_all)
        boxes = self.bbox_coder.decode(torch.cat(anchors_all), torch.cat(deltas_all))
        ids = torch.cat(levels)
        finite = torch.isfinite(boxes).all(1) & torch.isfinite(scores)
        if not bool(finite.all()):  # overflowing activations: such proposals cannot be boxes
            boxes, scores, ids = boxes[finite], scores[finite], ids[finite]
        if cfg.min_bbox_size > 0:
            valid = (boxes[:, 2] >= cfg.min_bbox_size) & (boxes[:, 3] >= cfg.min_bbox_size)
            boxes, scores, ids = boxes[valid], scores[valid], ids[valid]
        if boxes.shape[0] == 0:
            return boxes.new_zeros((0, 6))
        keep = batched_nms(obb2xyxy(boxes), scores, ids, cfg.nms_iou)
        keep = keep[: cfg.max_per_img]
        return torch.cat([boxes[keep], scores[keep, None]], dim=1)
