"""RefinedDet: ResNet -> FPN (P3-P7, extra convs on C5) -> FRHead pass 1 -> AlignConv -> pass 2.

Submodule names give the reference's state-dict keys (``backbone.*``, ``neck.*``,
``bbox_head.*``, ``align_conv.ac.*``), so mmrotate Refined-Det checkpoints load unchanged.

Inference, as the reference's ``simple_test``:
1. pass 1 of the head on the pyramid: coarse logits/deltas, refinement branch, gate;
2. coarse boxes: the deltas decoded from one square anchor per cell (no clamping);
3. features gated (``x + x*gate``) and aligned on the coarse boxes;
4. pass 2 on the aligned features, fused with the refinement branch (``o + o*r``);
5. per level the top ``nms_pre`` cells by best sigmoid score, decoded relative to the coarse
   boxes with centres clamped to the image, then multiclass rotated NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...ops import multiclass_nms_rotated
from ..anchors import AnchorGenerator
from ..base import DetectorBase
from ..coders import DeltaXYWHAOBBoxCoder
from ..config import Thresholds
from .align import AlignConvModule
from .head import FRHead, fuse, gate_features

#: Anchor layout of every Refined-Det config (RotatedAnchorGenerator).
STRIDES: Tuple[int, ...] = (8, 16, 32, 64, 128)
ANCHOR_SCALE = 4.0
CODER_STDS: Tuple[float, ...] = (1.0,) * 5

Levels = List[Tensor]


@dataclass
class RetinaTestConfig:
    """test_cfg of the Refined-Det configs."""

    nms_pre: int = 2000
    score_thr: float = 0.05
    nms_iou: float = 0.1
    max_per_img: int = 2000


class RefinedDet(DetectorBase):
    """Single-stage oriented detector with feature refinement and alignment."""

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        bbox_head: FRHead,
        align_conv: AlignConvModule,
        start_level: int = 1,
        classes: Optional[Sequence[str]] = None,
        info: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = bbox_head
        self.align_conv = align_conv
        self.start_level = int(start_level)
        self.set_labels(bbox_head.num_classes, classes, info)
        self.info.setdefault("architecture", "refined-det")
        self.anchor_generator = AnchorGenerator(STRIDES, (ANCHOR_SCALE,), (1.0,))
        self.bbox_coder = DeltaXYWHAOBBoxCoder(stds=CODER_STDS)
        self.test_cfg = RetinaTestConfig()

    # test-time parameters ------------------------------------------------------------
    @property
    def default_thresholds(self) -> Thresholds:
        """The config's score threshold, NMS IoU and cut, used when a call passes none."""
        cfg = self.test_cfg
        return Thresholds(cfg.score_thr, cfg.nms_iou, cfg.max_per_img)

    @property
    def nms_pre(self) -> int:
        return self.test_cfg.nms_pre

    @nms_pre.setter
    def nms_pre(self, value: int) -> None:
        self.test_cfg.nms_pre = int(value)

    # network ------------------------------------------------------------------------
    def extract_feat(self, batch: Tensor) -> Levels:
        """FPN maps P3..P7 for a normalised (B, 3, H, W) batch."""
        return list(self.neck(list(self.backbone(batch))[self.start_level :]))

    def anchors(self, feats: Sequence[Tensor]) -> Levels:
        """One square, axis-aligned anchor (cx, cy, 4*stride, 4*stride, 0) per cell and level."""
        sizes = [tuple(f.shape[-2:]) for f in feats]
        out = []
        for xyxy in self.anchor_generator(sizes, feats[0].device):
            ctr = (xyxy[:, :2] + xyxy[:, 2:]) * 0.5
            wh = xyxy[:, 2:] - xyxy[:, :2]
            out.append(torch.cat([ctr, wh, torch.zeros_like(wh[:, :1])], dim=1).to(feats[0].dtype))
        return out

    def coarse_boxes(self, anchors: Levels, coarse_reg: Levels) -> Levels:
        """Pass-1 deltas decoded on the anchors: (B, H*W, 5) per level, not clamped."""
        boxes = []
        for level_anchors, deltas in zip(anchors, coarse_reg):
            batch = deltas.shape[0]
            flat = deltas.permute(0, 2, 3, 1).reshape(batch, -1, 5)
            expanded = level_anchors[None].expand(batch, -1, -1).reshape(-1, 5)
            boxes.append(self.bbox_coder.decode(expanded, flat.reshape(-1, 5)).reshape(batch, -1, 5))
        return boxes

    def head_outputs(self, feats: Levels) -> Dict[str, Levels]:
        """Both passes of the head: every intermediate, ending in the fused logits and deltas."""
        coarse_cls, coarse_reg, refine_cls, refine_reg, gates = self.bbox_head(feats)
        rois = self.coarse_boxes(self.anchors(feats), coarse_reg)
        aligned = self.align_conv(gate_features(feats, gates), rois)
        cls2, reg2 = self.bbox_head.coarse(aligned)
        return {
            "coarse_cls": coarse_cls,
            "coarse_reg": coarse_reg,
            "refine_cls": refine_cls,
            "refine_reg": refine_reg,
            "gates": gates,
            "rois": rois,
            "aligned": aligned,
            "cls_score": fuse(cls2, refine_cls),
            "bbox_pred": fuse(reg2, refine_reg),
        }

    def run_stages(
        self,
        batch: Tensor,
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        thresholds: Optional[Thresholds] = None,
    ) -> Dict[str, Any]:
        """``forward`` keeping every intermediate, for parity checks and diagnostics."""
        image_sizes = self.image_sizes_for(batch, image_sizes)
        thresholds = thresholds or self.default_thresholds
        with torch.inference_mode():
            feats = self.extract_feat(batch)
            stages: Dict[str, Any] = {"features": feats, **self.head_outputs(feats)}
            stages["detections"] = [
                self.postprocess(
                    [c[i] for c in stages["cls_score"]],
                    [r[i] for r in stages["bbox_pred"]],
                    [b[i] for b in stages["rois"]],
                    size,
                    thresholds,
                )
                for i, size in enumerate(image_sizes)
            ]
        return stages

    def postprocess(
        self,
        cls_score: Levels,
        bbox_pred: Levels,
        rois: Levels,
        image_size: Tuple[int, int],
        thresholds: Optional[Thresholds] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """One image: per-level top-k, decode on the coarse boxes, threshold, rotated NMS."""
        cfg = self.test_cfg
        th = thresholds or self.default_thresholds
        all_boxes, all_scores = [], []
        for logits, deltas, boxes in zip(cls_score, bbox_pred, rois):
            scores = logits.permute(1, 2, 0).reshape(-1, self.bbox_head.num_classes).sigmoid()
            deltas = deltas.permute(1, 2, 0).reshape(-1, 5)
            if 0 < cfg.nms_pre < scores.shape[0]:
                top = scores.max(dim=1).values.topk(cfg.nms_pre).indices
                scores, deltas, boxes = scores[top], deltas[top], boxes[top]
            all_boxes.append(self.bbox_coder.decode(boxes, deltas, max_shape=image_size))
            all_scores.append(scores)
        return multiclass_nms_rotated(
            torch.cat(all_boxes), torch.cat(all_scores), th.score, th.nms_iou, th.max_detections
        )


def build(
    backbone: nn.Module,
    neck: nn.Module,
    num_classes: int,
    channels: int = 256,
    stacked_convs: int = 4,
    start_level: int = 1,
    classes: Optional[Sequence[str]] = None,
    info: Optional[Dict[str, Any]] = None,
) -> RefinedDet:
    """Fresh head and alignment convs around a backbone and neck."""
    head = FRHead(num_classes, channels, stacked_convs)
    align = AlignConvModule(channels, STRIDES)
    return RefinedDet(backbone, neck, head, align, start_level, classes, info)
