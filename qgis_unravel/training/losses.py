"""The loss functions of the Oriented R-CNN configs, with mmdet's summing and averaging."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Element-wise smooth L1: quadratic below ``beta``, linear above (no reduction)."""
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def weighted_bce(logits: Tensor, targets: Tensor, weights: Tensor, avg_factor: float) -> Tensor:
    """Sigmoid cross-entropy summed over weighted entries and divided by ``avg_factor``."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * weights).sum() / max(avg_factor, 1.0)


def weighted_ce(logits: Tensor, labels: Tensor, weights: Tensor, avg_factor: float) -> Tensor:
    """Softmax cross-entropy summed over weighted rows and divided by ``avg_factor``."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return (loss * weights).sum() / max(avg_factor, 1.0)


def weighted_smooth_l1(
    pred: Tensor, target: Tensor, weights: Tensor, beta: float, avg_factor: float
) -> Tensor:
    """Smooth L1 summed over weighted entries and divided by ``avg_factor``."""
    if target.numel() == 0:
        return pred.sum() * 0.0
    return (smooth_l1(pred, target, beta) * weights).sum() / max(avg_factor, 1.0)
