"""Anchor grids of the oriented RPN, as mmdet's ``AnchorGenerator`` lays them out.

Rows are ordered (y, x, k), which is the order of ``pred.permute(1, 2, 0).reshape(-1, C)``
for the RPN maps, so anchors and predictions line up row by row.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .config import ANCHOR_RATIOS, ANCHOR_SCALES, ANCHOR_STRIDES


def base_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """Anchors (K, 4) xyxy centred on 0 (center_offset 0), ratio-major like mmdet."""
    h_ratios = torch.sqrt(torch.tensor(list(ratios), dtype=torch.float32))
    w_ratios = 1.0 / h_ratios
    scales_t = torch.tensor(list(scales), dtype=torch.float32)
    ws = (stride * w_ratios[:, None] * scales_t[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales_t[None, :]).reshape(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(base: Tensor, feat_size: Tuple[int, int], stride: int) -> Tensor:
    """Shift the base anchors to every cell of an (H, W) map: (H*W*K, 4), order (y, x, k)."""
    height, width = feat_size
    device = base.device
    shift_x = torch.arange(width, device=device, dtype=torch.float32) * stride
    shift_y = torch.arange(height, device=device, dtype=torch.float32) * stride
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


class AnchorGenerator:
    """Multi-level anchors; the base anchors are computed once and cached per device."""

    def __init__(
        self,
        strides: Sequence[int] = ANCHOR_STRIDES,
        scales: Sequence[float] = ANCHOR_SCALES,
        ratios: Sequence[float] = ANCHOR_RATIOS,
    ) -> None:
        self.strides = tuple(int(s) for s in strides)
        self.num_base_anchors = len(scales) * len(ratios)
        self._base = [base_anchors(s, scales, ratios) for s in self.strides]

    def __call__(self, feat_sizes: Sequence[Tuple[int, int]], device: torch.device) -> List[Tensor]:
        """One (H*W*K, 4) xyxy tensor per level for maps of the given sizes."""
        if len(feat_sizes) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature levels, got {len(feat_sizes)}")
        return [
            grid_anchors(base.to(device), tuple(size), stride)
            for base, size, stride in zip(self._base, feat_sizes, self.strides)
        ]
