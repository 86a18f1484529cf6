"""mmdet's MaxIoUAssigner and RandomSampler, for both stages of Oriented R-CNN.

An assignment is a LongTensor over the candidate boxes: ``-1`` ignored, ``0`` background,
``k >= 1`` matched to ground truth ``k - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaxIoUConfig:
    pos_iou_thr: float
    neg_iou_thr: float
    min_pos_iou: float
    match_low_quality: bool
    gt_max_assign_all: bool = True


RPN_ASSIGNER = MaxIoUConfig(0.7, 0.3, 0.3, True)
RCNN_ASSIGNER = MaxIoUConfig(0.5, 0.5, 0.5, False)


def max_iou_assign(overlaps: Tensor, cfg: MaxIoUConfig) -> Tensor:
    """Assign candidates from the (num_gts, num_boxes) IoU matrix."""
    num_gts, num_boxes = overlaps.shape
    assigned = overlaps.new_full((num_boxes,), -1, dtype=torch.long)
    if num_boxes == 0:
        return assigned
    if num_gts == 0:
        return assigned.zero_()
    max_iou, argmax = overlaps.max(dim=0)
    assigned[(max_iou >= 0) & (max_iou < cfg.neg_iou_thr)] = 0
    pos = max_iou >= cfg.pos_iou_thr
    assigned[pos] = argmax[pos] + 1
    if cfg.match_low_quality:
        # Every object gets its best candidate(s), even below pos_iou_thr; later objects win ties.
        gt_max, gt_argmax = overlaps.max(dim=1)
        for i in range(num_gts):
            if gt_max[i] >= cfg.min_pos_iou:
                if cfg.gt_max_assign_all:
                    assigned[overlaps[i] == gt_max[i]] = i + 1
                else:
                    assigned[gt_argmax[i]] = i + 1
    return assigned


def _random_subset(inds: Tensor, num: int, generator: Optional[torch.Generator]) -> Tensor:
    if inds.numel() <= num:
        return inds
    perm = torch.randperm(inds.numel(), generator=generator)[:num].to(inds.device)
    return inds[perm]


def random_sample(
    assigned: Tensor, num: int, pos_fraction: float, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """Positive and negative indices: up to ``num * pos_fraction`` positives, negatives fill up."""
    pos = torch.nonzero(assigned > 0).flatten()
    pos = _random_subset(pos, int(num * pos_fraction), generator)
    neg = torch.nonzero(assigned == 0).flatten()
    neg = _random_subset(neg, num - pos.numel(), generator)
    return pos, neg
