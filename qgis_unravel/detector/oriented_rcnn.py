"""OrientedRCNN: backbone -> FPN -> oriented RPN -> RoI head, plus ``predict`` for images.

Plain tensors pass between the parts (torchvision detection style), and the submodule
names give the mmrotate state_dict keys (``backbone.*``, ``neck.*``, ``rpn_head.*``,
``roi_head.bbox_head.*``), so official checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import DetectorBase, Result, default_class_names
from .config import Thresholds
from .roi_head import OrientedRoIHead, rois_from_proposals
from .rpn import OrientedRPNHead

__all__ = ["OrientedRCNN", "Result", "default_class_names"]


class OrientedRCNN(DetectorBase):
    """Two-stage oriented detector; outputs le90 boxes in input pixels, w >= h."""

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        rpn_head: OrientedRPNHead,
        roi_head: OrientedRoIHead,
        classes: Optional[Sequence[str]] = None,
        info: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        self.set_labels(roi_head.num_classes, classes, info)

    @classmethod
    def from_parts(
        cls,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        fpn_width: int,
        roi_fc_width: int = 1024,
        classes: Optional[Sequence[str]] = None,
        info: Optional[Dict[str, Any]] = None,
    ) -> OrientedRCNN:
        """Build fresh heads around a backbone and neck (for training or loading)."""
        rpn = OrientedRPNHead(fpn_width, fpn_width)
        roi = OrientedRoIHead(fpn_width, roi_fc_width, num_classes)
        return cls(backbone, neck, rpn, roi, classes=classes, info=info)

    # test-time parameters ----------------------------------------------------------
    @property
    def default_thresholds(self) -> Thresholds:
        """The config's second-stage thresholds, used when a call passes none."""
        cfg = self.roi_head.test_cfg
        return Thresholds(cfg.score_thr, cfg.nms_iou, cfg.max_per_img)

    @property
    def rpn_nms_pre(self) -> int:
        return self.rpn_head.test_cfg.nms_pre

    @rpn_nms_pre.setter
    def rpn_nms_pre(self, value: int) -> None:
        self.rpn_head.test_cfg.nms_pre = int(value)

    @property
    def rpn_nms_iou(self) -> float:
        return self.rpn_head.test_cfg.nms_iou

    @rpn_nms_iou.setter
    def rpn_nms_iou(self, value: float) -> None:
        self.rpn_head.test_cfg.nms_iou = float(value)

    @property
    def rpn_max_proposals(self) -> int:
        return self.rpn_head.test_cfg.max_per_img

    @rpn_max_proposals.setter
    def rpn_max_proposals(self, value: int) -> None:
        self.rpn_head.test_cfg.max_per_img = int(value)

    # network ---------------------------------------------------------------------
    def extract_feat(self, batch: Tensor) -> List[Tensor]:
        """FPN maps P2..P6 for a normalised (B, 3, H, W) batch."""
        return list(self.neck(list(self.backbone(batch))))

    def run_stages(
        self, batch: Tensor, image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        thresholds: Optional[Thresholds] = None,
    ) -> Dict[str, Any]:
        """``forward`` keeping every intermediate (features, proposals, RoIs, raw head outputs),
        for parity checks and diagnostics."""
        image_sizes = self.image_sizes_for(batch, image_sizes)
        with torch.inference_mode():
            feats = self.extract_feat(batch)
            proposals = self.rpn_head.proposals(*self.rpn_head(feats))
            rois = rois_from_proposals(proposals)
            cls_score, bbox_pred = self.roi_head(feats, rois)
            dets = self.roi_head.postprocess(rois, cls_score, bbox_pred, image_sizes, thresholds)
        return {
            "features": feats,
            "proposals": proposals,
            "rois": rois,
            "cls_score": cls_score,
            "bbox_pred": bbox_pred,
            "detections": dets,
        }
