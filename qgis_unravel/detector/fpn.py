"""Feature pyramid neck, equal to mmdet 2.x ``FPN`` (``add_extra_convs`` False or ``'on_input'``).

Lateral 1x1 convs bring every backbone level to ``out_channels``; coarser levels are added
into finer ones after nearest upsampling to the finer level's exact size; a 3x3 conv
smooths each sum. Levels beyond the backbone's come from stride-2 subsampling of the
coarsest output (``max_pool2d`` with kernel 1), as in Faster/Oriented R-CNN, or, with
``extra_convs_on_input`` (RetinaNet-style detectors such as Refined-Det), from stride-2 3x3
convs: the first on the coarsest *backbone* map, the next ones on the previous output. Key names
(``lateral_convs.i.conv.*``, ``fpn_convs.i.conv.*``) follow mmcv's ``ConvModule``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class ConvModule(nn.Module):
    """A conv with bias wrapped as ``.conv``, the key layout of mmcv's ConvModule without norm/act."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class FPN(nn.Module):
    """Feature pyramid over all backbone levels, plus ``num_outs - len(in_channels)`` extra ones."""

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        num_outs: int = 5,
        extra_convs_on_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        if not self.in_channels:
            raise ValueError("FPN needs at least one input level")
        if num_outs < len(self.in_channels):
            raise ValueError(
                f"num_outs ({num_outs}) must be at least the number of inputs ({len(self.in_channels)})"
            )
        self.out_channels = int(out_channels)
        self.num_outs = int(num_outs)
        self.lateral_convs = nn.ModuleList(ConvModule(c, self.out_channels, 1) for c in self.in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(self.out_channels, self.out_channels, 3, padding=1) for _ in self.in_channels
        )
        self.extra_convs_on_input = bool(extra_convs_on_input)
        if self.extra_convs_on_input:
            for i in range(len(self.in_channels), self.num_outs):
                cin = self.in_channels[-1] if i == len(self.in_channels) else self.out_channels
                self.fpn_convs.append(ConvModule(cin, self.out_channels, 3, padding=1, stride=2))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # mmdet's FPN default: Xavier-uniform weights, zero bias.
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]
        if self.extra_convs_on_input:
            source = inputs[-1]
            for conv in self.fpn_convs[len(laterals) :]:
                outs.append(conv(source))
                source = outs[-1]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)


def build_from_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "neck.", num_outs: int = 5) -> FPN:
    """An FPN whose widths fit the checkpoint (weights are NOT loaded).

    ``num_outs`` cannot be read from the weights when the extra levels are pooled (they have
    none); mmrotate's Oriented R-CNN configs use 5. Extra convs (``add_extra_convs='on_input'``)
    are recognised by their keys and then give ``num_outs``.
    """
    in_channels = []
    while f"{prefix}lateral_convs.{len(in_channels)}.conv.weight" in state_dict:
        in_channels.append(int(state_dict[f"{prefix}lateral_convs.{len(in_channels)}.conv.weight"].shape[1]))
    if not in_channels:
        raise ValueError(f"no FPN neck in this state_dict (missing {prefix}lateral_convs.0.conv.weight)")
    out_channels = int(state_dict[f"{prefix}lateral_convs.0.conv.weight"].shape[0])
    for i in range(len(in_channels)):
        smooth = state_dict.get(f"{prefix}fpn_convs.{i}.conv.weight")
        if smooth is None or tuple(smooth.shape) != (out_channels, out_channels, 3, 3):
            found = None if smooth is None else tuple(smooth.shape)
            raise ValueError(
                f"FPN checkpoint: {prefix}fpn_convs.{i}.conv.weight is {found}, expected "
                f"{(out_channels, out_channels, 3, 3)}; only mmdet FPNs without extra convs are supported"
            )
    extra = 0
    while f"{prefix}fpn_convs.{len(in_channels) + extra}.conv.weight" in state_dict:
        extra += 1
    if extra:
        first = state_dict[f"{prefix}fpn_convs.{len(in_channels)}.conv.weight"]
        if int(first.shape[1]) != in_channels[-1]:
            raise ValueError(
                f"FPN checkpoint: the first extra conv takes {int(first.shape[1])} channels; only "
                f"extra convs on the coarsest backbone map ({in_channels[-1]} channels, "
                "add_extra_convs='on_input') are supported"
            )
        return FPN(in_channels, out_channels, len(in_channels) + extra, extra_convs_on_input=True)
    return FPN(in_channels, out_channels, num_outs)
