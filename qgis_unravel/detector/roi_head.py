"""Oriented R-CNN's second stage: rotated RoIAlign per FPN level, a 2-FC box head, NMS.

Three steps are exposed on their own because the trainer needs them separately:
``extract`` (features for given RoIs), ``forward`` (raw logits and deltas) and
``postprocess`` (decode, threshold, multiclass rotated NMS).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import batched_nms_rotated, roi_align_rotated
from .coders import DeltaXYWHAOBBoxCoder
from .config import (
    RCNN_CODER_STDS,
    ROI_FINEST_SCALE,
    ROI_OUTPUT_SIZE,
    ROI_SAMPLING_RATIO,
    ROI_STRIDES,
    RCNNTestConfig,
    Thresholds,
)

Detections = Tuple[Tensor, Tensor, Tensor]  # boxes (N, 5), scores (N,), labels (N,)


def map_roi_levels(rois: Tensor, num_levels: int, finest_scale: float = ROI_FINEST_SCALE) -> Tensor:
    """FPN level of each RoI (K, 6): floor(log2(sqrt(w*h)/finest_scale + 1e-6)) in [0, L-1]."""
    scale = torch.sqrt(rois[:, 3] * rois[:, 4])
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def rois_from_proposals(proposals: Sequence[Tensor]) -> Tensor:
    """Stack per-image (N_i, >=5) boxes into (sum N_i, 6) RoIs [image index, cx, cy, w, h, a]."""
    rois = []
    for index, boxes in enumerate(proposals):
        ids = boxes.new_full((boxes.shape[0], 1), float(index))
        rois.append(torch.cat([ids, boxes[:, :5]], dim=1))
    return torch.cat(rois, dim=0)


class RotatedSingleRoIExtractor(nn.Module):
    """Pools each RoI from the one FPN level its size maps to (rotated, aligned, clockwise)."""

    def __init__(
        self,
        strides: Sequence[int] = ROI_STRIDES,
        output_size: int = ROI_OUTPUT_SIZE,
        sampling_ratio: int = ROI_SAMPLING_RATIO,
        finest_scale: float = ROI_FINEST_SCALE,
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.finest_scale = finest_scale

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """(K, 6) RoIs in input pixels -> (K, C, 7, 7) features from the first len(strides) maps."""
        num_levels = len(self.strides)
        channels = feats[0].shape[1]
        size = self.output_size
        if rois.shape[0] == 0:
            return feats[0].new_zeros((0, channels, size, size))
        levels = map_roi_levels(rois, num_levels, self.finest_scale)
        # One host synchronisation for all levels, none per RoI.
        counts = torch.bincount(levels, minlength=num_levels).tolist()
        order = None
        if max(counts) < rois.shape[0]:
            order = torch.argsort(levels, stable=True)
        pooled = []
        start = 0
        for level, (stride, count) in enumerate(zip(self.strides, counts)):
            if count == 0:
                continue
            inds = None if order is None else order[start : start + count]
            start += count
            pooled.append(
                roi_align_rotated(
                    feats[level],
                    rois if inds is None else rois[inds],
                    size,
                    1.0 / stride,
                    sampling_ratio=self.sampling_ratio,
                    aligned=True,
                    clockwise=True,
                )
            )
        if order is None:
            return pooled[0]
        pooled_all = torch.cat(pooled)
        out = torch.empty_like(pooled_all)
        out[order] = pooled_all
        return out


class RotatedShared2FCBBoxHead(nn.Module):
    """Flatten, two shared FC + ReLU, then class logits (C+1, last = background) and 5 deltas.

    Box regression is class-agnostic, as in the Oriented R-CNN configs.
    """

    def __init__(
        self, in_channels: int, fc_channels: int, num_classes: int, roi_size: int = ROI_OUTPUT_SIZE
    ) -> None:
        super().__init__()
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(in_channels * roi_size * roi_size, fc_channels), nn.Linear(fc_channels, fc_channels)]
        )
        self.fc_cls = nn.Linear(fc_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_channels, 5)

    @property
    def num_classes(self) -> int:
        """Foreground classes, read from ``fc_cls`` so that swapping the classifier updates it."""
        return self.fc_cls.out_features - 1

    def forward(self, roi_feats: Tensor) -> Tuple[Tensor, Tensor]:
        first, second = self.shared_fcs
        if (
            not torch.is_grad_enabled()
            and roi_feats.dim() == 4
            and roi_feats.shape[0] > 0
            and roi_feats.is_contiguous(memory_format=torch.channels_last)
            and not roi_feats.is_contiguous()
        ):
            # Channels-last RoI features (what roi_align_rotated returns): read them in memory
            # order against the first FC's weight permuted to match, instead of copying the
            # (K, C*7*7) features into channel-major order.
            hwc = roi_feats.permute(0, 2, 3, 1).flatten(1)
            x = F.relu(F.linear(hwc, self._hwc_weight(roi_feats), first.bias))
        else:
            x = F.relu(first(roi_feats.flatten(1)))
        x = F.relu(second(x))
        return self.fc_cls(x), self.fc_reg(x)

    def _hwc_weight(self, roi_feats: Tensor) -> Tensor:
        """The first FC's weight with inputs ordered (h, w, C), cached until the weight changes."""
        weight = self.shared_fcs[0].weight
        channels, height, width = roi_feats.shape[1:]
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype, channels, height, width)
        cached = getattr(self, "_hwc_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                hwc = weight.reshape(weight.shape[0], channels, height, width).permute(0, 2, 3, 1)
                cached = (key, hwc.reshape(weight.shape[0], -1).contiguous())
            self._hwc_cache = cached
        return cached[1]


class OrientedRoIHead(nn.Module):
    """RoI extractor + box head + test-time postprocessing (keys ``bbox_head.*``)."""

    def __init__(self, in_channels: int, fc_channels: int, num_classes: int) -> None:
        super().__init__()
        self.bbox_roi_extractor = RotatedSingleRoIExtractor()
        self.bbox_head = RotatedShared2FCBBoxHead(in_channels, fc_channels, num_classes)
        self.bbox_coder = DeltaXYWHAOBBoxCoder(stds=RCNN_CODER_STDS)
        self.test_cfg = RCNNTestConfig()

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    def extract(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """RoI features (K, C, 7, 7) for (K, 6) RoIs [image index, cx, cy, w, h, a]."""
        return self.bbox_roi_extractor(feats, rois)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tuple[Tensor, Tensor]:
        """Raw class logits (K, C+1) and deltas (K, 5) for RoIs of all images at once."""
        return self.bbox_head(self.extract(feats, rois))

    def postprocess(
        self,
        rois: Tensor,
        cls_score: Tensor,
        bbox_pred: Tensor,
        image_sizes: Sequence[Tuple[int, int]],
        thresholds: Optional[Thresholds] = None,
    ) -> List[Detections]:
        """Per image: softmax, decode (centres clamped to the image), threshold, NMS, cut.

        ``thresholds`` are this call's; None uses the head's ``test_cfg`` (the config's values).
        """
        if thresholds is None:
            cfg = self.test_cfg
            thresholds = Thresholds(cfg.score_thr, cfg.nms_iou, cfg.max_per_img)
        boxes = self.bbox_coder.decode(rois[:, 1:], bbox_pred)
        scores = F.softmax(cls_score, dim=-1)
        image_ids = rois[:, 0].long()
        results = []
        for index, size in enumerate(image_sizes):
            mask = image_ids == index
            img_boxes = _clamp_centres(boxes[mask], size)
            results.append(_multiclass_nms(img_boxes, scores[mask], thresholds))
        return results


def _multiclass_nms(boxes: Tensor, scores: Tensor, th: Thresholds) -> Detections:
    """mmrotate multiclass_nms_rotated with class-agnostic boxes."""
    num_classes = scores.shape[1] - 1
    fg = scores[:, :num_classes]
    valid = fg > th.score
    box_idx, labels = torch.nonzero(valid, as_tuple=True)
    cand_scores = fg[box_idx, labels]
    cand_boxes = boxes[box_idx]
    if cand_boxes.shape[0] == 0:
        return cand_boxes, cand_scores, labels
    keep = batched_nms_rotated(cand_boxes, cand_scores, labels, th.nms_iou)
    if th.max_detections > 0:
        keep = keep[: th.max_detections]
    return cand_boxes[keep], cand_scores[keep], labels[keep]


def _clamp_centres(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """The decoder's max_shape step: centres into [0, W-1] x [0, H-1] of the unpadded image."""
    height, width = size
    x = boxes[:, 0].clamp(min=0, max=width - 1)
    y = boxes[:, 1].clamp(min=0, max=height - 1)
    return torch.cat([x[:, None], y[:, None], boxes[:, 2:]], dim=1)
