"""Building a detector to train: from scratch, from an ImageNet backbone checkpoint, or from an
official detector checkpoint with its classification layer remapped to the new classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from torch import nn

PathLike = Union[str, Path]


@dataclass
class ModelSpec:
    """Architecture of a fresh Oriented R-CNN (defaults: the UnravelNet tiny config)."""

    backbone: str = "UnravelNet"  # or "LEGNet" (att_kernel does not apply)
    stem_dim: int = 32
    depths: Tuple[int, ...] = (1, 4, 4, 2)
    att_kernel: Tuple[int, ...] = (11, 11, 11, 11)
    mlp_ratio: float = 2.0
    fpn_width: int = 256
    roi_fc_width: int = 1024
    drop_path_rate: float = 0.1
    extra: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["depths"] = list(self.depths)
        d["att_kernel"] = list(self.att_kernel)
        return d


PRESETS: Dict[str, ModelSpec] = {
    "tiny": ModelSpec(),
    "small": ModelSpec(stem_dim=64),
    # The narrow variant of the golden reduced model: trainable on a CPU in under an hour.
    "nano": ModelSpec(stem_dim=16, depths=(1, 2, 2, 1), fpn_width=64, roi_fc_width=128),
    # Tests: the smallest network the code accepts.
    "pico": ModelSpec(
        stem_dim=8, depths=(1, 1, 1, 1), att_kernel=(3, 3, 3, 3), fpn_width=16, roi_fc_width=32
    ),
}


def init_heads(detector: nn.Module) -> None:
    """mmdet's ``init_weights`` for the heads: RPN convs N(0, 0.01); shared FCs Xavier;
    classifier N(0, 0.01); regressor N(0, 0.001); zero biases."""
    rpn = detector.rpn_head
    for conv in (rpn.rpn_conv, rpn.rpn_cls, rpn.rpn_reg):
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
    head = detector.roi_head.bbox_head
    for fc in head.shared_fcs:
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
    nn.init.normal_(head.fc_cls.weight, std=0.01)
    nn.init.zeros_(head.fc_cls.bias)
    nn.init.normal_(head.fc_reg.weight, std=0.001)
    nn.init.zeros_(head.fc_reg.bias)


def build_model(spec: ModelSpec, classes: Sequence[str]) -> nn.Module:
    """A freshly initialised UnravelNet Oriented R-CNN for ``classes``."""
    from ..detector.fpn import FPN
    from ..detector.oriented_rcnn import OrientedRCNN

    if spec.backbone == "LEGNet":
        from ..detector.backbones.legnet import LEGNet

        backbone = LEGNet(
            spec.stem_dim, spec.depths, mlp_ratio=spec.mlp_ratio, drop_path_rate=spec.drop_path_rate
        )
    elif spec.backbone == "UnravelNet":
        from ..detector.backbones.unravelnet import UnravelNet

        backbone = UnravelNet(
            stem_dim=spec.stem_dim,
            depths=spec.depths,
            att_kernel=spec.att_kernel,
            mlp_ratio=spec.mlp_ratio,
            drop_path_rate=spec.drop_path_rate,
        )
    else:
        raise ValueError(f"unknown backbone {spec.backbone!r}; UnravelNet or LEGNet")
    neck = FPN(backbone.out_channels, spec.fpn_width, num_outs=5)
    info = spec.as_dict()
    detector = OrientedRCNN.from_parts(
        backbone, neck, len(classes), spec.fpn_width, spec.roi_fc_width, classes=list(classes), info=info
    )
    init_heads(detector)
    return detector


def remap_classes(detector: nn.Module, classes: Sequence[str]) -> List[str]:
    """Give the classifier the new classes, keeping the trained rows of names it already knew
    (and the background row); returns the names that start untrained."""
    head = detector.roi_head.bbox_head
    old = list(detector.classes)
    old_w, old_b = head.fc_cls.weight.data, head.fc_cls.bias.data
    new_fc = nn.Linear(old_w.shape[1], len(classes) + 1)
    nn.init.normal_(new_fc.weight, std=0.01)
    nn.init.zeros_(new_fc.bias)
    fresh = []
    for i, name in enumerate(classes):
        if name in old:
            j = old.index(name)
            new_fc.weight.data[i] = old_w[j]
            new_fc.bias.data[i] = old_b[j]
        else:
            fresh.append(name)
    new_fc.weight.data[-1] = old_w[-1]
    new_fc.bias.data[-1] = old_b[-1]
    head.fc_cls = new_fc.to(old_w.device)
    if not isinstance(getattr(type(head), "num_classes", None), property):
        head.num_classes = len(classes)  # older heads store the count instead of deriving it
    detector.classes = list(classes)
    detector.info["num_classes"] = len(classes)
    return fresh


def from_detector_checkpoint(path: PathLike, classes: Sequence[str]) -> Tuple[nn.Module, List[str]]:
    """An official (or our own) Oriented R-CNN checkpoint, its classifier remapped to ``classes``."""
    from ..detector.checkpoint import build_detector, read_checkpoint

    sd, meta = read_checkpoint(path)
    detector = build_detector(sd, meta)
    fresh = remap_classes(detector, classes)
    return detector, fresh


def load_backbone(detector: nn.Module, path: PathLike) -> Tuple[int, int]:
    """Load ImageNet (classification) weights into the backbone; (loaded, total) tensor counts.

    Classifier tensors (``head.*``, ``fc.*``) are skipped; the file must fit the backbone's
    widths. BatchNorm ``num_batches_tracked`` counters are not counted (older torchvision files
    lack them).
    """
    from ..detector.checkpoint import read_checkpoint
    from ..detector.state_dict import strip_prefix

    sd, _ = read_checkpoint(path)
    if any(k.startswith("backbone.") for k in sd):
        sd = strip_prefix(sd, "backbone.")
    target = detector.backbone.state_dict()
    usable = {k: v for k, v in sd.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    wrong = [k for k, v in sd.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if wrong:
        raise ValueError(
            f"{Path(path).name} does not fit this backbone: {len(wrong)} tensors have other shapes "
            f"(e.g. {wrong[0]}); pick the preset whose widths match the file"
        )
    def counted(keys):
        return [k for k in keys if not k.endswith("num_batches_tracked")]

    loaded, total = len(counted(usable)), len(counted(target))
    if loaded < 0.9 * total:
        raise ValueError(
            f"{Path(path).name} covers only {loaded} of {total} backbone tensors; "
            "it is not a backbone of this architecture and size"
        )
    detector.backbone.load_state_dict({**target, **usable})
    return loaded, total


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# Refined-Det --------------------------------------------------------------------------------
@dataclass
class RefinedDetSpec:
    """Architecture of a fresh Refined-Det (defaults: the paper's ResNet-50 config)."""

    depth: int = 50
    base_channels: int = 64
    width: int = 256
    stacked_convs: int = 4  # what the reference builds (its configs' "2" is overridden)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


REFINED_DET_PRESETS: Dict[str, RefinedDetSpec] = {
    "r50": RefinedDetSpec(),
    "r101": RefinedDetSpec(depth=101),
    "r18": RefinedDetSpec(depth=18),
    # A narrow variant trainable on a CPU in about an hour (no ImageNet weights fit it).
    "nano": RefinedDetSpec(depth=18, base_channels=16, width=64, stacked_convs=2),
    # Tests: the smallest network the code accepts.
    "pico": RefinedDetSpec(depth=18, base_channels=8, width=16, stacked_convs=1),
}

#: mmdet's bias_init_with_prob(0.01): the classifier starts predicting 1 % foreground.
PRIOR_LOGIT = -4.59511985013459


def init_refined_det_head(detector: nn.Module) -> None:
    """The FRHead's init_cfg: every head conv N(0, 0.01) with zero bias, ``retina_cls`` bias at
    the 1 % prior; the alignment convs N(0, 0.01) (S2A-Net's AlignConv.init_weights)."""
    for module in detector.bbox_head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    nn.init.constant_(detector.bbox_head.retina_cls.bias, PRIOR_LOGIT)
    for conv in detector.align_conv.ac:
        nn.init.normal_(conv.deform_conv.weight, std=0.01)


def build_refined_det(
    spec: RefinedDetSpec, classes: Sequence[str], pretrained_backbone: bool = False
) -> nn.Module:
    """A freshly initialised Refined-Det for ``classes``.

    With an ImageNet backbone (``pretrained_backbone``) the configs' ``frozen_stages=1`` and
    ``norm_eval=True`` apply; from scratch every stage and BatchNorm trains.
    """
    from ..detector.backbones.resnet import ResNet
    from ..detector.fpn import FPN
    from ..detector.refined_det.checkpoint import infer_architecture
    from ..detector.refined_det.model import build

    backbone = ResNet(
        spec.depth,
        spec.base_channels,
        frozen_stages=1 if pretrained_backbone else -1,
        norm_eval=pretrained_backbone,
    )
    neck = FPN(backbone.out_channels[1:], spec.width, num_outs=5, extra_convs_on_input=True)
    detector = build(backbone, neck, len(classes), spec.width, spec.stacked_convs, 1, classes=list(classes))
    detector.info.update(infer_architecture(detector.state_dict()))
    init_refined_det_head(detector)
    return detector
