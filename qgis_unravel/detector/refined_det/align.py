"""S2A-Net's alignment convolution as Refined-Det uses it (keys ``align_conv.ac.{level}.deform_conv``).

At every location of a pyramid level, the 3x3 taps of a deformable conv are moved onto a
3x3 lattice spread over the rotated box predicted there (pass 1's coarse box): tap (i, j)
reads the point ``centre + R(a) @ ((j-1) * w/3, (i-1) * h/3)`` (in feature-map cells).
The conv has no bias and is followed by a ReLU. Offsets are computed exactly as mmrotate's
``AlignConv.get_offset`` does (sample point minus regular tap position), so the sampled
points agree with the reference to float rounding.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor, nn

from ...ops.deform_conv import DeformConv2d


def align_offsets(boxes: Tensor, height: int, width: int, stride: float, kernel_size: int = 3) -> Tensor:
    """Deformable-conv offsets (2*K*K, H, W) that put the taps on each cell's box.

    ``boxes`` (H*W, 5) are le90 boxes in image pixels, rows ordered (y, x).
    """
    dtype, device = boxes.dtype, boxes.device
    pad = (kernel_size - 1) // 2
    idx = torch.arange(-pad, pad + 1, dtype=dtype, device=device)
    tap_y, tap_x = torch.meshgrid(idx, idx, indexing="ij")
    tap_x, tap_y = tap_x.reshape(-1), tap_y.reshape(-1)
    cell_y, cell_x = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    x_conv = cell_x.reshape(-1)[:, None] + tap_x
    y_conv = cell_y.reshape(-1)[:, None] + tap_y
    cx, cy, w, h, a = boxes.unbind(dim=1)
    cx, cy, w, h = cx / stride, cy / stride, w / stride, h / stride
    cos, sin = torch.cos(a), torch.sin(a)
    dx, dy = (w / kernel_size)[:, None] * tap_x, (h / kernel_size)[:, None] * tap_y
    x_box = cos[:, None] * dx - sin[:, None] * dy + cx[:, None]
    y_box = sin[:, None] * dx + cos[:, None] * dy + cy[:, None]
    offset = torch.stack([y_box - y_conv, x_box - x_conv], dim=-1)  # (H*W, K*K, 2): (dy, dx) per tap
    return offset.reshape(height * width, -1).t().reshape(-1, height, width)


class AlignConv(nn.Module):
    """Deformable 3x3 conv steered by boxes, then ReLU."""

    def __init__(self, channels: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.deform_conv = DeformConv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: Tensor, boxes: Tensor) -> Tensor:
        """``x`` (B, C, H, W) and ``boxes`` (B, H*W, 5) in image pixels."""
        batch, _, height, width = x.shape
        with torch.no_grad():
            offsets = torch.stack(
                [
                    align_offsets(boxes[i].detach(), height, width, self.stride, self.kernel_size)
                    for i in range(batch)
                ]
            )
        return self.deform_conv(x, offsets).relu()


class AlignConvModule(nn.Module):
    """One AlignConv per pyramid level (key ``ac.{level}``)."""

    def __init__(self, channels: int, strides: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__()
        self.ac = nn.ModuleList(AlignConv(channels, s, kernel_size) for s in strides)

    def forward(self, feats: Sequence[Tensor], boxes: Sequence[Tensor]) -> List[Tensor]:
        """Per level: features (B, C, H, W) and boxes (B, H*W, 5)."""
        return [conv(x, b) for conv, x, b in zip(self.ac, feats, boxes)]
