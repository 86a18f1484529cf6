"""Small building blocks shared by the UnravelNet and LEGNet backbones.

Every module here keeps the attribute names of the original mmrotate code, because checkpoint
keys are derived from them. Keep the names and the registration order stable: other backbones
import from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ActLayer = type[nn.Module]

# The binomial rows the anti-aliased pooling of Zhang (2019) uses, by filter size.
_BINOMIAL_ROWS = {
    1: [1.0],
    2: [1.0, 1.0],
    3: [1.0, 2.0, 1.0],
    4: [1.0, 3.0, 3.0, 1.0],
    5: [1.0, 4.0, 6.0, 4.0, 1.0],
    6: [1.0, 5.0, 10.0, 10.0, 5.0, 1.0],
    7: [1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0],
}


def bn(channels: int) -> nn.BatchNorm2d:
    """BatchNorm as mmcv's ``build_norm_layer(dict(type='BN'))`` makes it (eps 1e-5)."""
    return nn.BatchNorm2d(channels)


def cpu_channels_last(x: Tensor, enabled: bool) -> Tensor:
    """``x`` in channels-last memory when ``enabled`` and on CPU, where oneDNN runs the many
    depthwise and 1x1 convolutions of these backbones faster that way; else ``x``."""
    if enabled and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang 2019, the ``antialiased_cnns.BlurPool`` layer).

    A fixed binomial filter applied per channel after reflect padding, then strided. The
    filter is a persistent buffer named ``filt`` because checkpoints carry it; the loaded
    values are used as they are.
    """

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2) -> None:
        super().__init__()
        if filt_size not in _BINOMIAL_ROWS:
            raise ValueError(f"BlurPool filt_size must be 1 to 7, got {filt_size}")
        self.channels = channels
        self.filt_size = filt_size
        self.stride = stride
        before = (filt_size - 1) // 2
        after = filt_size // 2
        self.pad_sizes = (before, after, before, after)  # left, right, top, bottom
        row = torch.tensor(_BINOMIAL_ROWS[filt_size], dtype=torch.float32)
        filt = row[:, None] * row[None, :]
        filt = filt / filt.sum()
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.filt_size == 1:
            return x[:, :, :: self.stride, :: self.stride]
        x = F.pad(x, self.pad_sizes, mode="reflect")
        return F.conv2d(x, self.filt, stride=self.stride, groups=x.shape[1])

    def extra_repr(self) -> str:
        return f"{self.channels}, filt_size={self.filt_size}, stride={self.stride}"


class DRFD(nn.Module):
    """Downsampling between stages: C channels at H x W become 2C channels at H/2 x W/2.

    A depthwise 3x3 conv doubles the channels; a strided depthwise conv branch and a max-pool
    branch (each normalised) are concatenated and mixed by a 1x1 conv. This is the plain
    version UnravelNet uses (LEGNet adds a Gaussian branch on top).
    """

    def __init__(self, dim: int, act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.dim = dim
        self.outdim = dim * 2
        self.conv = nn.Conv2d(dim, dim * 2, 3, stride=1, padding=1, groups=dim)
        self.conv_c = nn.Conv2d(dim * 2, dim * 2, 3, stride=2, padding=1, groups=dim * 2)
        self.act_c = act_layer()
        self.norm_c = bn(dim * 2)
        self.max_m = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.norm_m = bn(dim * 2)
        self.fusion = nn.Conv2d(dim * 4, self.outdim, 1, stride=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        pooled = self.norm_m(self.max_m(x))
        strided = self.norm_c(self.act_c(self.conv_c(x)))
        return self.fusion(torch.cat([strided, pooled], dim=1))


def check_square_input(x: Tensor, multiple: int, name: str) -> None:
    """Raise a clear ValueError unless ``x`` is (B, C, S, S) with S a multiple of ``multiple``."""
    if x.dim() != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height != width:
        raise ValueError(
            f"{name} needs square inputs (its mid-range attention is defined on square maps), "
            f"got {height}x{width}; pad or tile the image to a square size"
        )
    if height % multiple:
        raise ValueError(
            f"{name} needs sides that are a multiple of {multiple}, got {height}x{width}; "
            f"pad the image to {-(-height // multiple) * multiple}x{-(-width // multiple) * multiple}"
        )
