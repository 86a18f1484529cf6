"""Deformable convolution v1 (one offset group) in plain PyTorch, as mmcv 1.7.2's ``DeformConv2d``.

Each kernel tap of each output position reads the input at its regular position plus a
learned (here: computed) offset. The value there is bilinear: the four surrounding pixels,
each counting as zero when it lies outside the map, and the whole sample zero unless the
point lies strictly inside (-1, H) x (-1, W) -- mmcv's CPU kernel rule, reproduced with the
same weights (``hh*hw, hh*lw, lh*hw, lh*lw``) so the numbers agree to float rounding.

The sampled taps form an im2col matrix (C*K*K rows) that a matrix product with the weights
turns into the output. That matrix is large (9 x 256 x H x W floats at an FPN's finest
level), so output positions are processed in chunks of bounded size.

Offset layout: ``(B, 2*K*K, H_out, W_out)`` with channel ``2*k`` the row (y) offset and
``2*k + 1`` the column (x) offset of tap ``k = i*kw + j``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

IntPair = Union[int, Tuple[int, int]]

#: Upper bound on the floats of one chunk's im2col matrix (about 64 MB).
DEFAULT_CHUNK_ELEMENTS = 16 * 1024 * 1024


def _pair(value: IntPair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """Deformable convolution of ``input`` (B, C, H, W) with ``weight`` (O, C, kh, kw).

    Returns (B, O, H_out, W_out) with the usual convolution output size.
    """
    if input.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"expected 4-d input and weight, got {tuple(input.shape)} and {tuple(weight.shape)}")
    batch, channels, height, width = input.shape
    out_channels, in_channels, kh, kw = weight.shape
    if in_channels != channels:
        raise ValueError(
            f"weight expects {in_channels} input channels, input has {channels} (groups are not supported)"
        )
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    out_h = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    taps = kh * kw
    if tuple(offset.shape) != (batch, 2 * taps, out_h, out_w):
        raise ValueError(
            f"offset must have shape {(batch, 2 * taps, out_h, out_w)} (one offset group), "
            f"got {tuple(offset.shape)}"
        )
    positions = out_h * out_w
    # Regular sampling grid of every (tap, output position), before the offsets.
    dtype, device = input.dtype, input.device
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)
    out_y = (torch.arange(out_h, device=device, dtype=dtype) * sh - ph).repeat_interleave(out_w)
    out_x = (torch.arange(out_w, device=device, dtype=dtype) * sw - pw).repeat(out_h)
    base_y = tap_y[:, None] + out_y[None, :]  # (K, P)
    base_x = tap_x[:, None] + out_x[None, :]
    offset = offset.reshape(batch, taps, 2, positions)
    flat = input.reshape(batch, channels, height * width)
    w2d = weight.reshape(out_channels, channels * taps)
    per_position = max(1, channels * taps)
    step = max(1, min(positions, int(chunk_elements) // (per_position * max(1, batch))))
    outputs = []
    for start in range(0, positions, step):
        stop = min(positions, start + step)
        y = base_y[None, :, start:stop] + offset[:, :, 0, start:stop]  # (B, K, p)
        x = base_x[None, :, start:stop] + offset[:, :, 1, start:stop]
        columns = _bilinear_columns(flat, y, x, height, width)  # (B, C*K, p)
        outputs.append(torch.matmul(w2d, columns))
    out = torch.cat(outputs, dim=2).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def _bilinear_columns(flat: Tensor, y: Tensor, x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear samples of ``flat`` (B, C, H*W) at points (B, K, p): the (B, C*K, p) im2col block."""
    batch, channels, _ = flat.shape
    taps, count = y.shape[1], y.shape[2]
    inside = (y > -1) & (x > -1) & (y < height) & (x < width)
    y_low = torch.floor(y)
    x_low = torch.floor(x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y_low.long(), x_low.long()
    y1, x1 = y0 + 1, x0 + 1
    total = None
    for yy, xx, weight in ((y0, x0, hy * hx), (y0, x1, hy * lx), (y1, x0, ly * hx), (y1, x1, ly * lx)):
        valid = inside & (yy >= 0) & (yy <= height - 1) & (xx >= 0) & (xx <= width - 1)
        index = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).reshape(batch, 1, taps * count)
        values = torch.gather(flat, 2, index.expand(batch, channels, taps * count))
        term = values * (weight * valid.to(weight.dtype)).reshape(batch, 1, taps * count)
        total = term if total is None else total + term
    assert total is not None
    return total.reshape(batch, channels * taps, count)


class DeformConv2d(nn.Module):
    """mmcv ``DeformConv2d`` layout: ``weight`` (O, C, kh, kw), no bias by default; offsets given."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.kernel_size = (kh, kw)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation)
