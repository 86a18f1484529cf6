"""Building a RefinedDet from an mmrotate Refined-Det state dict: everything read from the keys.

ResNet depth and width, FPN widths and levels, the head's width, class count and number of
stacked convs all come from the tensor shapes (the reference's configs misstate the stacked
convs, so nothing is assumed).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from torch import Tensor

from .. import fpn
from ..backbones import resnet
from .head import stacked_convs_in
from .model import STRIDES, RefinedDet, build

SIGNATURE = (
    "bbox_head.retina_cls.weight",
    "bbox_head.sigmoid_conv.weight",
    "align_conv.ac.0.deform_conv.weight",
)


def matches(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a Refined-Det state dict (FRHead with its gate and alignment convs)."""
    return all(key in state_dict for key in SIGNATURE)


def infer_architecture(state_dict: Mapping[str, Tensor]) -> Dict[str, Any]:
    """Widths, depths and class count read from the tensor shapes."""
    if not resnet.matches(state_dict, "backbone."):
        raise ValueError(
            "this Refined-Det checkpoint has no ResNet backbone (backbone.conv1/layer1 keys missing)"
        )
    backbone = resnet.infer_config(state_dict, "backbone.")
    lateral = 0
    while f"neck.lateral_convs.{lateral}.conv.weight" in state_dict:
        lateral += 1
    channels = int(state_dict["bbox_head.retina_cls.weight"].shape[1])
    num_anchors = int(state_dict["bbox_head.retina_reg.weight"].shape[0]) // 5
    if num_anchors != 1:
        raise ValueError(f"the head predicts {num_anchors} anchors per cell; Refined-Det uses 1")
    levels = 0
    while f"align_conv.ac.{levels}.deform_conv.weight" in state_dict:
        levels += 1
    if levels != len(STRIDES):
        raise ValueError(
            f"{levels} alignment convs in the checkpoint; Refined-Det has one per level ({len(STRIDES)})"
        )
    return {
        "architecture": "refined-det",
        "backbone": "ResNet",
        "backbone_config": backbone,
        "depth": backbone["depth"],
        "stem_width": backbone["base_channels"],
        "depths": list(resnet.ARCH[backbone["depth"]][1]),
        "fpn_width": int(state_dict["neck.lateral_convs.0.conv.weight"].shape[0]),
        "head_width": channels,
        "stacked_convs": stacked_convs_in(state_dict),
        "start_level": 4 - lateral,
        "num_classes": int(state_dict["bbox_head.retina_cls.weight"].shape[0]),
        "requires_square": False,
    }


def build_from_state_dict(state_dict: Mapping[str, Tensor], classes: Optional[list] = None) -> RefinedDet:
    """A RefinedDet sized from the state dict (weights are NOT loaded)."""
    arch = infer_architecture(state_dict)
    backbone = resnet.ResNet(**arch["backbone_config"])
    neck = fpn.build_from_state_dict(state_dict, "neck.")
    if neck.num_outs != len(STRIDES):
        raise ValueError(f"the FPN has {neck.num_outs} outputs; Refined-Det uses {len(STRIDES)} (P3-P7)")
    return build(
        backbone,
        neck,
        arch["num_classes"],
        arch["head_width"],
        arch["stacked_convs"],
        arch["start_level"],
        classes=classes,
        info=arch,
    )
