"""Rotated-box ops in plain PyTorch (CPU and CUDA, same code), matching mmcv 1.7.2 / mmrotate 0.3.4.

Conventions: a rotated box is ``(cx, cy, w, h, a)`` in pixels, ``a`` in radians (le90), x right,
y down, positive angles clockwise on screen (mmcv's ``clockwise=True``).
"""

from __future__ import annotations

from .boxes import norm_angle, obb2poly, obb2xyxy, obb_half_extents, poly2obb
from .iou_rotated import box_iou_rotated
from .nms import batched_nms, batched_nms_rotated, grouped_nms_rotated, nms, nms_rotated
from .roi_align_rotated import roi_align_rotated

__all__ = [
    "batched_nms",
    "batched_nms_rotated",
    "box_iou_rotated",
    "grouped_nms_rotated",
    "nms",
    "nms_rotated",
    "norm_angle",
    "obb2poly",
    "obb2xyxy",
    "obb_half_extents",
    "poly2obb",
    "roi_align_rotated",
]
