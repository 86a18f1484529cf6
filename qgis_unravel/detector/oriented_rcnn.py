"""OrientedRCNN: backbone -> FPN -> oriented RPN -> RoI head, plus ``predict`` for images.

Plain tensors pass between the parts (torchvision detection style), and the submodule
names give the mmrotate state_dict keys (``backbone.*``, ``neck.*``, ``rpn_head.*``,
``roi_head.bbox_head.*``), so official checkpoints load unchanged.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .config import DOTA_V1_CLASSES, SIZE_DIVISOR, Normalization, Thresholds
from .preprocess import check_image, make_batch, padded_size
from .roi_head import OrientedRoIHead, rois_from_proposals
from .rpn import OrientedRPNHead

Result = Dict[str, Tensor]


def default_class_names(num_classes: int) -> List[str]:
    """DOTA-v1.0 names for 15 classes, else class_0, class_1, ..."""
    if num_classes == len(DOTA_V1_CLASSES):
        return list(DOTA_V1_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


class OrientedRCNN(nn.Module):
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
        num_classes = roi_head.num_classes
        self.classes = list(classes) if classes is not None else default_class_names(num_classes)
        if len(self.classes) != num_classes:
            raise ValueError(f"{len(self.classes)} class names given for a head with {num_classes} classes")
        self.info: Dict[str, Any] = dict(info or {})
        self.info.setdefault("num_classes", num_classes)

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

    @property
    def fast(self) -> bool:
        """Inference speed-ups of the backbone: eval-mode BatchNorms folded into the convs and,
        on CPU, channels-last maps. Same function up to float32 rounding (the golden parity
        tests pass either way); ``load_detector`` turns it on, training ignores it."""
        return bool(getattr(self.backbone, "fast", False))

    @fast.setter
    def fast(self, value: bool) -> None:
        value = bool(value)
        if hasattr(self.backbone, "fast"):
            self.backbone.fast = value
        if hasattr(self.backbone, "channels_last_when_fast"):
            self.backbone.channels_last_when_fast = value
        config = self.info.get("backbone_config")
        if isinstance(config, dict) and "fast" in config:
            config["fast"] = value

    @property
    def requires_square(self) -> bool:
        return bool(getattr(self.backbone, "requires_square", False))

    @property
    def min_input_size(self) -> int:
        """Smallest side the backbone accepts (UnravelNet needs 96: its blur pads the 1/32 map)."""
        size = getattr(self.backbone, "min_input_size", None)
        if size is None:
            module = sys.modules.get(type(self.backbone).__module__)
            size = getattr(module, "MIN_INPUT_SIZE", SIZE_DIVISOR)
        return int(size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # network ---------------------------------------------------------------------
    def extract_feat(self, batch: Tensor) -> List[Tensor]:
        """FPN maps P2..P6 for a normalised (B, 3, H, W) batch."""
        return list(self.neck(list(self.backbone(batch))))

    def forward(self, batch: Tensor, image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                thresholds: Optional[Thresholds] = None) -> List[Result]:
        """Detect in a normalised batch; ``image_sizes`` (H, W) are the unpadded sizes.

        Returns one dict per image with "boxes" (N, 5), "scores" (N,), "labels" (N,),
        sorted by descending score. ``thresholds`` apply to this call only.
        """
        stages = self.run_stages(batch, image_sizes, thresholds)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in stages["detections"]]

    def run_stages(
        self, batch: Tensor, image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        thresholds: Optional[Thresholds] = None,
    ) -> Dict[str, Any]:
        """``forward`` keeping every intermediate (features, proposals, RoIs, raw head outputs),
        for parity checks and diagnostics."""
        self.check_batch(batch)
        if image_sizes is None:
            image_sizes = [tuple(batch.shape[-2:])] * batch.shape[0]
        if len(image_sizes) != batch.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes given for a batch of {batch.shape[0]}")
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

    def check_batch(self, batch: Tensor) -> None:
        """Raise a ValueError for a batch the network cannot take."""
        if not isinstance(batch, Tensor) or batch.dim() != 4:
            shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"expected a (B, 3, H, W) tensor, got {shape}")
        if batch.shape[1] != 3:
            raise ValueError(f"expected 3 (RGB) channels, got {batch.shape[1]}")
        height, width = batch.shape[-2:]
        if height % SIZE_DIVISOR or width % SIZE_DIVISOR:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of {SIZE_DIVISOR}; pad it "
                "(predict() does this for you)"
            )
        if self.requires_square and height != width:
            raise ValueError(
                f"the {self.info.get('backbone', 'backbone')} backbone needs square inputs, "
                f"got {height}x{width}; pad to a square (predict() does this for you)"
            )

    # images ----------------------------------------------------------------------
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 4, *,
                thresholds: Optional[Thresholds] = None,
                normalization: Optional[Normalization] = None) -> List[Dict[str, np.ndarray]]:
        """Detect in RGB uint8 (H, W, 3) arrays of any size; numpy results in input order.

        Images are normalised (``normalization``; default ImageNet RGB), padded bottom/right
        (with 0 after normalisation, as mmdet does) to a multiple of 32 (a square one when the
        backbone needs it) and batched by padded size. ``thresholds`` (default: the config's)
        apply to this call only: the model is never changed, so one cached model serves
        concurrent runs with different settings.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("predict() takes a list of images; wrap a single image in a list")
        images = [check_image(img, i) for i, img in enumerate(images)]
        results: List[Optional[Dict[str, np.ndarray]]] = [None] * len(images)
        step = max(1, int(batch_size))
        for size, indices in self._group_by_padded_size(images).items():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                batch = make_batch([images[i] for i in chunk], size, self.device, normalization)
                sizes = [tuple(images[i].shape[:2]) for i in chunk]
                for i, out in zip(chunk, self(batch, sizes, thresholds)):
                    results[i] = _to_numpy(out)
        return results  # type: ignore[return-value]

    def _group_by_padded_size(self, images: Sequence[np.ndarray]) -> Dict[Tuple[int, int], List[int]]:
        groups: Dict[Tuple[int, int], List[int]] = defaultdict(list)
        for i, img in enumerate(images):
            size = padded_size(img.shape[0], img.shape[1], self.requires_square, self.min_input_size)
            groups[size].append(i)
        return groups


def _to_numpy(out: Result) -> Dict[str, np.ndarray]:
    return {
        "boxes": out["boxes"].float().cpu().numpy(),
        "scores": out["scores"].float().cpu().numpy(),
        "labels": out["labels"].cpu().numpy().astype(np.int64),
    }
