"""Rotated RoI Align with the exact semantics of mmcv 1.7.2's CPU kernel, in plain PyTorch.

All RoIs of a chunk are handled at once: the sampling points and bilinear weights are computed as
tensors, and each output bin is a weighted sum of at most (samples x 4) pixels of a channels-last
copy of the feature map: one weighted embedding-bag sum per chunk. Chunking over RoIs bounds the
memory of the temporaries.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["roi_align_rotated"]

# Budget per chunk, in elements of (bins x taps x channels), that bounds the temporaries.
_GATHER_BUDGET = 1 << 25
# Without autograd a tap costs about this many elements of temporaries (indices, weights, ...).
_TAP_WIDTH = 8


def _pair(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    pair = tuple(int(s) for s in size)
    if len(pair) != 2:
        raise ValueError(f"output_size must be an int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def _check_inputs(features: Tensor, rois: Tensor, out_h: int, out_w: int) -> None:
    if not isinstance(features, Tensor) or features.dim() != 4:
        raise ValueError("features must be a tensor of shape (B, C, H, W)")
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 6:
        shape = tuple(rois.shape) if isinstance(rois, Tensor) else type(rois).__name__
        raise ValueError(f"rois must have shape (K, 6) as (batch_idx, cx, cy, w, h, a), got {shape}")
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output_size must be positive, got ({out_h}, {out_w})")


def _roi_geometry(rois: Tensor, spatial_scale: float, aligned: bool) -> tuple[Tensor, ...]:
    """Centre and size of each RoI in feature pixels, as the kernel derives them."""
    offset = 0.5 if aligned else 0.0
    cx = rois[:, 1] * spatial_scale - offset
    cy = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale
    roi_h = rois[:, 4] * spatial_scale
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    return cx, cy, roi_w, roi_h


def _sample_points(
    rois: Tensor, out_h: int, out_w: int, grid_h: Tensor, grid_w: Tensor, spatial_scale: float,
    aligned: bool, clockwise: bool, max_grid: tuple[int, int],
) -> tuple[Tensor, Tensor, Tensor]:
    """Sampling coordinates (K, oh, ow, gh, gw) in feature pixels, and a mask of real samples.

    ``grid_h``/``grid_w`` are per-RoI sample counts per bin (fixed when sampling_ratio > 0, else
    possibly 0 for an empty RoI); the tensors are padded to ``max_grid`` and the padding is masked.
    """
    dtype = rois.dtype
    cx, cy, roi_w, roi_h = _roi_geometry(rois, spatial_scale, aligned)
    theta = -rois[:, 5] if clockwise else rois[:, 5]
    cos, sin = torch.cos(theta), torch.sin(theta)
    bin_h = roi_h / out_h
    bin_w = roi_w / out_w
    dev = rois.device
    ph = torch.arange(out_h, device=dev, dtype=dtype)
    pw = torch.arange(out_w, device=dev, dtype=dtype)
    iy = torch.arange(max_grid[0], device=dev, dtype=dtype)
    ix = torch.arange(max_grid[1], device=dev, dtype=dtype)
    gh = grid_h.clamp(min=1).to(dtype)[:, None, None]
    gw = grid_w.clamp(min=1).to(dtype)[:, None, None]
    # yy: (K, oh, gh) offsets from the RoI centre along its height, xx: (K, ow, gw) along its width.
    yy = (-roi_h / 2)[:, None, None] + ph[None, :, None] * bin_h[:, None, None] + (
        iy[None, None, :] + 0.5
    ) * bin_h[:, None, None] / gh
    xx = (-roi_w / 2)[:, None, None] + pw[None, :, None] * bin_w[:, None, None] + (
        ix[None, None, :] + 0.5
    ) * bin_w[:, None, None] / gw
    yy = yy[:, :, None, :, None]  # (K, oh, 1, gh, 1)
    xx = xx[:, None, :, None, :]  # (K, 1, ow, 1, gw)
    c = cos[:, None, None, None, None]
    s = sin[:, None, None, None, None]
    y = yy * c - xx * s + cy[:, None, None, None, None]
    x = yy * s + xx * c + cx[:, None, None, None, None]
    real = (iy[None, :] < grid_h[:, None].to(dtype))[:, None, None, :, None] & (
        ix[None, :] < grid_w[:, None].to(dtype)
    )[:, None, None, None, :]
    return y, x, real.expand(y.shape)


def _bilinear_taps(y: Tensor, x: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flat pixel indices (..., 4), weights (..., 4) and a mask of samples that read anything.

    mmcv's border rules: a sample beyond ``[-1, H]`` x ``[-1, W]`` contributes zero (its weights
    are returned as they are, masked by the caller, and its indices are valid pixels); otherwise
    coordinates are clamped into ``[0, H - 1]`` x ``[0, W - 1]``, so a sample at or past the last
    row/column uses that row/column only.
    """
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)  # False for NaN too
    # NaN -> 0 keeps the indices valid; such samples are outside, so they read nothing.
    y = torch.nan_to_num(y, nan=0.0).clamp_(0, height - 1)
    x = torch.nan_to_num(x, nan=0.0).clamp_(0, width - 1)
    y_low = y.floor()
    x_low = x.floor()
    ly = y.sub_(y_low)
    lx = x.sub_(x_low)
    hy = 1.0 - ly
    hx = 1.0 - lx
    weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=-1)
    yl = y_low.long()
    xl = x_low.long()
    dy = (yl < height - 1).long().mul_(width)
    dx = (xl < width - 1).long()
    base = yl.mul_(width).add_(xl)
    index = torch.stack([base, base + dx, base + dy, base + dy + dx], dim=-1)
    return index, weights, inside


def _sample_grid(
    rois: Tensor, out_h: int, out_w: int, spatial_scale: float, sampling_ratio: int, aligned: bool
) -> tuple[Tensor, Tensor]:
    """Samples per bin along each axis, per RoI: fixed, or ceil(roi size / bins) (0 if empty)."""
    k = rois.shape[0]
    if sampling_ratio > 0:
        fixed = torch.full((k,), sampling_ratio, dtype=torch.long, device=rois.device)
        return fixed, fixed
    _, _, roi_w, roi_h = _roi_geometry(rois, spatial_scale, aligned)
    return torch.ceil(roi_h / out_h).long(), torch.ceil(roi_w / out_w).long()


def _align_chunk(
    flat_feats: Tensor, rois: Tensor, grid_h: Tensor, grid_w: Tensor, out_h: int, out_w: int,
    spatial_scale: float, aligned: bool, clockwise: bool, height: int, width: int,
    max_grid: tuple[int, int], fixed_grid: bool,
) -> Tensor:
    """(k, oh, ow, C) pooled features of a chunk of RoIs (channels last)."""
    k = rois.shape[0]
    y, x, real = _sample_points(
        rois, out_h, out_w, grid_h, grid_w, spatial_scale, aligned, clockwise, max_grid
    )
    index, weights, valid = _bilinear_taps(y, x, height, width)
    if not fixed_grid:
        valid &= real
    count = (grid_h * grid_w).clamp(min=1).to(weights.dtype)
    weights = weights.div_(count[:, None, None, None, None, None])
    weights = torch.where(valid[..., None], weights, 0.0)
    if bool((rois[:, 0] != 0).any()):
        batch = rois[:, 0].long()
        index = index + (batch * (height * width))[:, None, None, None, None, None]
    bins = k * out_h * out_w
    taps = max_grid[0] * max_grid[1] * 4
    values = _weighted_rows(flat_feats, index.reshape(bins, taps), weights.reshape(bins, taps))
    return values.reshape(k, out_h, out_w, -1)


def _weighted_rows(flat_feats: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """``out[r] = sum_t weights[r, t] * flat_feats[index[r, t]]`` for every bin r.

    Without autograd this is one weighted-sum embedding bag, which reads each tap's row of
    channels in place without materialising the gathered values (and without host
    synchronisation); for training, a gather keeps the gradient path simple.
    """
    if flat_feats.requires_grad or weights.requires_grad:
        gathered = flat_feats.index_select(0, index.reshape(-1)).reshape(*index.shape, -1)
        return torch.bmm(weights[:, None, :].to(gathered.dtype), gathered)[:, 0]
    return F.embedding_bag(index, flat_feats, mode="sum", per_sample_weights=weights.to(flat_feats.dtype))


def roi_align_rotated(
    features: Tensor,
    rois: Tensor,
    output_size: Union[int, Sequence[int]],
    spatial_scale: float,
    sampling_ratio: int = 2,
    aligned: bool = True,
    clockwise: bool = True,
) -> Tensor:
    """Pool a fixed-size feature patch from each rotated RoI, exactly as mmcv 1.7.2's CPU kernel.

    Args:
        features: ``(B, C, H, W)`` feature map.
        rois: ``(K, 6)`` rows ``(batch_idx, cx, cy, w, h, a)`` in image pixels, ``a`` in radians.
        output_size: ``oh`` or ``(oh, ow)`` bins.
        spatial_scale: feature pixels per image pixel (1/stride).
        sampling_ratio: samples per bin along each axis; ``<= 0`` means ``ceil(roi size / bins)``.
        aligned: subtract 0.5 from the scaled centre (pixel-centre model); if False, RoI sizes are
            clamped to at least one feature pixel (legacy behaviour).
        clockwise: angles follow the y-down, clockwise-positive convention of mmrotate (True), or the
            opposite one (False flips the sign of the angle).

    Returns:
        ``(K, C, oh, ow)``: each bin is the mean over its ``gh x gw`` sampling points, placed at
        ``(i + 0.5) * bin / g`` inside the bin, rotated about the RoI centre. Bilinear interpolation
        gives 0 for points beyond ``[-1, H] x [-1, W]``; inside that band, coordinates are clamped to
        the first/last pixel.
    """
    out_h, out_w = _pair(output_size)
    _check_inputs(features, rois, out_h, out_w)
    batch, channels, height, width = features.shape
    k = rois.shape[0]
    if k == 0 or channels == 0:
        return features.new_zeros((k, channels, out_h, out_w))
    # Half-precision maps are pooled in float32: sampling coordinates need the precision.
    work = torch.float64 if features.dtype == torch.float64 else torch.float32
    rois = rois.to(device=features.device, dtype=work)
    if aligned and bool(((rois[:, 3] < 0) | (rois[:, 4] < 0)).any()):
        raise ValueError("rois must have non-negative width and height (columns 3 and 4)")
    bad_batch = (rois[:, 0] < 0) | (rois[:, 0] >= batch)
    if bool(bad_batch.any()):
        raise ValueError(f"rois[:, 0] must be batch indices in [0, {batch - 1}]")
    grid_h, grid_w = _sample_grid(rois, out_h, out_w, spatial_scale, sampling_ratio, aligned)
    # Channels-last rows: each tap reads one contiguous row of channels.
    flat_feats = features.to(work).permute(0, 2, 3, 1).reshape(batch * height * width, channels).contiguous()
    grid_hw = (grid_h * grid_w).max() if sampling_ratio <= 0 else None
    max_grid = (
        (max(int(grid_h.max()), 1), max(int(grid_w.max()), 1))
        if grid_hw is not None
        else (sampling_ratio, sampling_ratio)
    )
    taps = out_h * out_w * max_grid[0] * max_grid[1] * 4
    # The sparse product only keeps (bins x taps) temporaries; the gather (autograd) path
    # materialises (bins x taps x channels).
    grad = flat_feats.requires_grad or rois.requires_grad
    step = max(1, _GATHER_BUDGET // (taps * (channels if grad else _TAP_WIDTH)))
    chunks = [
        _align_chunk(
            flat_feats, rois[start:start + step], grid_h[start:start + step], grid_w[start:start + step],
            out_h, out_w, spatial_scale, aligned, clockwise, height, width, max_grid, sampling_ratio > 0,
        )
        for start in range(0, k, step)
    ]
    out = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    # (K, oh, ow, C) memory seen as (K, C, oh, ow): a channels-last result, no extra copy.
    return out.permute(0, 3, 1, 2).to(features.dtype)
