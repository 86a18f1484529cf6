"""FRHead of Refined-Det: a RetinaNet-style head with a feature-refinement branch.

One set of weights runs twice. Pass 1 on the FPN maps gives coarse class logits and box
deltas (stacked 3x3 conv+ReLU towers, ``retina_cls``/``retina_reg``), a refinement branch
(a 1x3 then a 3x1 conv, shared by both outputs, then two 1x1 convs) and a gate,
``sigmoid(sigmoid_conv(coarse logits))``. Pass 2 runs the towers again on the aligned
features; its outputs ``o`` are fused with the refinement branch ``r`` as ``o + o*r``.

Key names follow the reference (``bbox_head.cls_convs.{i}.conv``, ``retina_cls``,
``conv_1_3``, ...). The number of stacked convs is read from the checkpoint: the reference
configs say 2, but its constructor builds 4.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from torch import Tensor, nn

from ..fpn import ConvModule


class ReLUConvModule(ConvModule):
    """mmcv ConvModule without norm and with its default ReLU (key ``conv.*``)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).relu_()


class FRHead(nn.Module):
    """Shared head over the pyramid levels; ``num_anchors`` is 1 in all Refined-Det configs."""

    def __init__(
        self, num_classes: int, in_channels: int = 256, stacked_convs: int = 4, num_anchors: int = 1
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.stacked_convs = int(stacked_convs)
        self.num_anchors = int(num_anchors)
        c = self.in_channels
        self.cls_convs = nn.ModuleList(ReLUConvModule(c, c, 3, padding=1) for _ in range(self.stacked_convs))
        self.reg_convs = nn.ModuleList(ReLUConvModule(c, c, 3, padding=1) for _ in range(self.stacked_convs))
        self.retina_cls = nn.Conv2d(c, self.num_anchors * self.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(c, self.num_anchors * 5, 3, padding=1)
        self.conv_3_1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0))
        self.conv_1_3 = nn.Conv2d(c, c, (1, 3), padding=(0, 1))
        self.cls_score_refine_conv = nn.Conv2d(c, self.num_anchors * self.num_classes, 1)
        self.bbox_pred_refine_conv = nn.Conv2d(c, self.num_anchors * 5, 1)
        self.sigmoid_conv = nn.Conv2d(self.num_anchors * self.num_classes, 1, 1)

    def coarse_single(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Class logits (B, A*C, H, W) and deltas (B, A*5, H, W) from the two conv towers."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)

    def forward_single(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Pass 1 on one level: coarse logits, coarse deltas, refine logits, refine deltas, gate."""
        coarse_cls, coarse_reg = self.coarse_single(x)
        refined = self.conv_3_1(self.conv_1_3(x))  # the reference computes this twice, identically
        refine_cls = self.cls_score_refine_conv(refined)
        refine_reg = self.bbox_pred_refine_conv(refined)
        gate = self.sigmoid_conv(coarse_cls).sigmoid()
        return coarse_cls, coarse_reg, refine_cls, refine_reg, gate

    def forward(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], ...]:
        """Pass 1 on every level: five lists (one tensor per level each)."""
        outs = [self.forward_single(x) for x in feats]
        return tuple(list(part) for part in zip(*outs))

    def coarse(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Pass 2 on every level (only the tower outputs are used from it)."""
        outs = [self.coarse_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]


def gate_features(feats: Sequence[Tensor], gates: Sequence[Tensor]) -> List[Tensor]:
    """``x + x * gate`` per level: the features the alignment conv reads."""
    return [x + x * g for x, g in zip(feats, gates)]


def fuse(outputs: Sequence[Tensor], refine: Sequence[Tensor]) -> List[Tensor]:
    """``o + o * r`` per level: pass-2 outputs weighted by the refinement branch."""
    return [o + o * r for o, r in zip(outputs, refine)]


def stacked_convs_in(state_dict, prefix: str = "bbox_head.") -> int:
    """Number of conv layers in the classification tower of a checkpoint."""
    count = 0
    while f"{prefix}cls_convs.{count}.conv.weight" in state_dict:
        count += 1
    return count
