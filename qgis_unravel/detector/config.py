"""Fixed settings of the Oriented R-CNN configs (mmrotate ``ORCNN_*_fpn_le90``).

These values are not stored in checkpoints, so they live here in one place: the
parity with mmrotate depends on every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

# mmdet Normalize(to_rgb=True): RGB order, applied before padding.
PIXEL_MEAN: Tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: Tuple[float, float, float] = (58.395, 57.12, 57.375)
SIZE_DIVISOR = 32  # mmdet Pad(size_divisor=32), pad value 0 after normalisation

# Anchors of the oriented RPN (mmdet AnchorGenerator).
ANCHOR_STRIDES: Tuple[int, ...] = (4, 8, 16, 32, 64)
ANCHOR_SCALES: Tuple[float, ...] = (8.0,)
ANCHOR_RATIOS: Tuple[float, ...] = (0.5, 1.0, 2.0)

# Box coders.
RPN_CODER_STDS: Tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.5, 0.5)
RCNN_CODER_STDS: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.1)

# RoI extractor.
ROI_OUTPUT_SIZE = 7
ROI_SAMPLING_RATIO = 2
ROI_STRIDES: Tuple[int, ...] = (4, 8, 16, 32)
ROI_FINEST_SCALE = 56.0

DOTA_V1_CLASSES: Tuple[str, ...] = (
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
)


@dataclass
class RPNTestConfig:
    """test_cfg.rpn of the configs: per-level top-k, horizontal NMS, final cut."""

    nms_pre: int = 2000
    nms_iou: float = 0.8
    max_per_img: int = 2000
    min_bbox_size: float = 0.0


@dataclass
class RCNNTestConfig:
    """test_cfg.rcnn of the configs: score threshold, rotated NMS, final cut."""

    score_thr: float = 0.05
    nms_iou: float = 0.1
    max_per_img: int = 2000


@dataclass(frozen=True)
class Thresholds:
    """Per-call post-processing of the second stage (a run's score / NMS IoU / cut).

    Passed to every ``predict`` call, so a detector shared by many runs is never mutated.
    """

    score: float = RCNNTestConfig.score_thr
    nms_iou: float = RCNNTestConfig.nms_iou
    max_detections: int = RCNNTestConfig.max_per_img


@dataclass(frozen=True)
class Normalization:
    """Per-call input normalisation: mean and std (0..255 scale) in the network's channel order."""

    mean: Tuple[float, float, float] = PIXEL_MEAN
    std: Tuple[float, float, float] = PIXEL_STD
    channel_order: str = "RGB"
