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

    Classifier tensors (``head.*``) are skipped; the file must fit the backbone's widths.
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
    if len(usable) < 0.9 * len(target):
        raise ValueError(
            f"{Path(path).name} covers only {len(usable)} of {len(target)} backbone tensors; "
            "it is not an UnravelNet backbone of this size"
        )
    detector.backbone.load_state_dict({**target, **usable})
    return len(usable), len(target)


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
