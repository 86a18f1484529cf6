"""Loading mmrotate Oriented R-CNN checkpoints (and saving in the same format).

Only ``torch.load(weights_only=True)`` is used, so a checkpoint can never run code. The
architecture is read from the tensor shapes; anything that is not an UnravelNet or LEGNet
Oriented R-CNN, or a Refined-Det, is refused with a message saying what the file holds instead.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .base import DetectorBase
from .config import ROI_OUTPUT_SIZE
from .folding import prepare_for_inference
from .oriented_rcnn import OrientedRCNN, default_class_names
from .state_dict import StateDict, strip_prefix

PathLike = Union[str, Path]

SUPPORTED = "an mmrotate Oriented R-CNN with an UnravelNet or LEGNet backbone, or a Refined-Det"

# Keys that identify other architectures, for a helpful refusal.
_FOREIGN_BACKBONES = (
    ("backbone.layer1.", "a ResNet/ResNeXt backbone"),
    ("backbone.stem.", "a RegNet or other mmdet backbone"),
    ("backbone.patch_embed.", "a Swin/ViT-style transformer backbone"),
    ("backbone.stages.0.downsample.", "a ConvNeXt/transformer-style backbone"),
)
_FOREIGN_HEADS = (
    ("bbox_head.retina_cls.", "a RetinaNet (single-stage) head"),
    ("bbox_head.conv_cls.", "a single-stage (e.g. S2A-Net/FCOS-style) head"),
    ("bbox_head.odm_cls.", "an S2A-Net head"),
    ("roi_head.bbox_head.0.", "a cascade RoI head (e.g. RoI Transformer)"),
    ("head.", "a classification head (an ImageNet-pretrained backbone file)"),
)


class CheckpointError(ValueError):
    """The file is not a checkpoint this project can load; the message says why."""


# reading ------------------------------------------------------------------------------
def read_checkpoint(path: PathLike) -> Tuple[StateDict, Dict[str, Any]]:
    """(state_dict, meta) from an mmcv checkpoint or a bare state dict, ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = _load_weights_only(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path.name} cannot be loaded safely: it needs Python code (pickled objects such as "
            f"{', '.join(_unsafe_globals(path)[:3]) or 'custom classes'}) to be executed, which this "
            "plugin refuses to do. Re-save it as a plain state_dict (tensors only). "
            f"Details: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # torch raises many kinds for damaged or foreign files
        raise CheckpointError(
            f"{path.name} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    return split_checkpoint(obj, path.name)


# numpy scalars and arrays appear in mmcv checkpoints' meta (e.g. hook messages); rebuilding
# them runs no user code, so they are allowed on top of torch's weights-only set.
_NUMPY_GLOBALS = {
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
}


def _unsafe_globals(path: Path) -> List[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # old torch or unreadable file: the caller reports the load error
        return []


def _load_weights_only(path: Path) -> Any:
    """torch.load(weights_only=True), retried with numpy's plain types allowed if needed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        needed = _unsafe_globals(path)
        if not needed or not set(needed) <= _NUMPY_GLOBALS:
            raise
    import numpy as np

    plain = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    plain += (np.float16, np.float32, np.float64)
    allowed = [np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray, np.dtype]
    allowed += [type(np.dtype(t)) for t in plain]  # numpy.dtype[float64] and friends
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def split_checkpoint(obj: Any, name: str = "checkpoint") -> Tuple[StateDict, Dict[str, Any]]:
    """Take the state dict and meta out of a loaded object (mmcv format or bare dict)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name} holds a {type(obj).__name__}, not a state dict")
    meta: Dict[str, Any] = {}
    state = obj
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state = obj["state_dict"]
        meta = dict(obj.get("meta") or {})
    elif "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{name} holds no tensors; it is not a model checkpoint")
    if all(k.startswith("module.") for k in tensors):
        tensors = strip_prefix(tensors, "module.")
    return tensors, meta


# architecture ---------------------------------------------------------------------------
def _backbone_modules() -> List[Tuple[str, ModuleType]]:
    from .backbones import legnet, unravelnet

    return [("UnravelNet", unravelnet), ("LEGNet", legnet)]


def identify_backbone(sd: Mapping[str, Tensor]) -> Tuple[str, ModuleType]:
    """The backbone family whose ``matches`` accepts the keys, or a CheckpointError."""
    check_detector_layout(sd)
    for name, module in _backbone_modules():
        if module.matches(sd, "backbone."):
            return name, module
    found = _describe(sd)
    raise CheckpointError(f"unsupported backbone: this file holds {found}; supported is {SUPPORTED}")


def check_detector_layout(sd: Mapping[str, Tensor]) -> None:
    """Refuse files that are not an Oriented R-CNN, naming what they are instead."""
    if not any(k.startswith("backbone.") for k in sd):
        found = _describe(sd)
        hint = ""
        if any(k.startswith(("Stem.", "stages.", "norm0.")) for k in sd):
            hint = " It looks like backbone-only weights (e.g. ImageNet pretraining), not a detector."
        raise CheckpointError(f"not a detector checkpoint: it holds {found}.{hint} Expected {SUPPORTED}.")
    for prefix, what in _FOREIGN_BACKBONES + _FOREIGN_HEADS:
        if any(k.startswith(prefix) for k in sd):
            raise CheckpointError(
                f"unsupported architecture: this file holds {what}; supported is {SUPPORTED}"
            )
    required = (
        "neck.lateral_convs.0.conv.weight",
        "rpn_head.rpn_cls.weight",
        "rpn_head.rpn_reg.weight",
        "roi_head.bbox_head.fc_cls.weight",
        "roi_head.bbox_head.fc_reg.weight",
        "roi_head.bbox_head.shared_fcs.0.weight",
    )
    missing = [k for k in required if k not in sd]
    if missing:
        raise CheckpointError(
            f"not an Oriented R-CNN checkpoint: missing {', '.join(missing)} (it holds {_describe(sd)}); "
            f"supported is {SUPPORTED}"
        )
    anchors = sd["rpn_head.rpn_cls.weight"].shape[0]
    reg = sd["rpn_head.rpn_reg.weight"].shape[0]
    if reg == 4 * anchors:
        raise CheckpointError(
            f"the RPN regresses 4 values per anchor: this is a horizontal (Faster R-CNN style) "
            f"RPN, not Oriented R-CNN's midpoint-offset RPN; supported is {SUPPORTED}"
        )
    if anchors != 3 or reg != 18:
        raise CheckpointError(
            f"the RPN has {anchors} objectness and {reg} regression outputs per position; "
            "Oriented R-CNN uses 3 anchors (1 sigmoid score and 6 offsets each)"
        )
    if sd["roi_head.bbox_head.fc_reg.weight"].shape[0] != 5:
        raise CheckpointError(
            "the RoI head regresses "
            f"{sd['roi_head.bbox_head.fc_reg.weight'].shape[0]} values; only class-agnostic "
            "rotated regression (5 values) is supported"
        )


def check_finite(sd: Mapping[str, Tensor]) -> None:
    """Refuse weights holding NaN or infinity (a damaged file, a diverged or poisoned training):
    they would only surface later as NaN boxes and an obscure error deep in the network."""
    bad = [key for key, value in sd.items() if isinstance(value, Tensor) and value.is_floating_point()
           and not bool(torch.isfinite(value).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"the weights hold NaN or infinite values ({shown}): the file is damaged or its training "
            "diverged; use another checkpoint"
        )


def _describe(sd: Mapping[str, Tensor]) -> str:
    """A short summary of the top-level parts of a state dict, for error messages."""
    parts = sorted({".".join(k.split(".")[:2]) for k in sd})
    shown = ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else "")
    return f"{len(sd)} tensors under {shown}"


def infer_architecture(sd: Mapping[str, Tensor], backbone_name: str) -> Dict[str, Any]:
    """Widths, depths and class count read from the tensor shapes."""
    fc0 = sd["roi_head.bbox_head.shared_fcs.0.weight"]
    fpn_width = int(sd["neck.lateral_convs.0.conv.weight"].shape[0])
    if fc0.shape[1] != fpn_width * ROI_OUTPUT_SIZE**2:
        raise CheckpointError(f"RoI head input {fc0.shape[1]} does not match FPN width {fpn_width} x 7 x 7")
    return {
        "backbone": backbone_name,
        "stem_width": int(sd["backbone.norm0.weight"].shape[0]) if "backbone.norm0.weight" in sd else None,
        "depths": _depths(sd),
        "fpn_width": fpn_width,
        "roi_fc_width": int(fc0.shape[0]),
        "num_classes": int(sd["roi_head.bbox_head.fc_cls.weight"].shape[0]) - 1,
    }


def _depths(sd: Mapping[str, Tensor]) -> List[int]:
    depths = []
    for stage in range(0, 16, 2):
        head = f"backbone.stages.{stage}.blocks."
        blocks = {int(k[len(head) :].split(".")[0]) for k in sd if k.startswith(head)}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
    return depths


def class_names(meta: Mapping[str, Any], num_classes: int) -> List[str]:
    """meta['CLASSES'] when it fits the head, else the defaults (DOTA-v1.0 for 15 classes)."""
    names = meta.get("CLASSES") if meta else None
    if names is not None and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return list(names)
    return default_class_names(num_classes)


# building -------------------------------------------------------------------------------
def build_detector(
    sd: Mapping[str, Tensor], meta: Optional[Mapping[str, Any]] = None, load: bool = True
) -> DetectorBase:
    """An OrientedRCNN or RefinedDet sized from the state dict, in eval mode.

    With ``load=False`` only the shapes are used (the tensors may even live on the meta
    device), which builds the architecture without weights.
    """
    from . import fpn
    from .refined_det import checkpoint as refined_det

    if refined_det.matches(sd):
        try:
            num_classes = refined_det.infer_architecture(sd)["num_classes"]
            names = class_names(meta or {}, num_classes)
            detector: DetectorBase = refined_det.build_from_state_dict(sd, names)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        if load:
            load_strict(detector, dict(sd))
        return detector.eval()

    name, module = identify_backbone(sd)
    arch = infer_architecture(sd, name)
    sd = dict(sd)
    remap = getattr(module, "remap_legacy_keys", None)
    if remap is not None:
        sd = remap(sd)
    try:
        backbone = module.build_from_state_dict(sd, "backbone.")
        neck = fpn.build_from_state_dict(sd, "neck.")
    except CheckpointError:
        raise
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    backbone_info = getattr(backbone, "info", None)
    if isinstance(backbone_info, dict):
        arch["backbone_config"] = dict(backbone_info)
    arch["requires_square"] = bool(getattr(backbone, "requires_square", False))
    detector = OrientedRCNN.from_parts(
        backbone,
        neck,
        arch["num_classes"],
        arch["fpn_width"],
        arch["roi_fc_width"],
        classes=class_names(meta or {}, arch["num_classes"]),
        info=arch,
    )
    if load:
        load_strict(detector, sd)
    return detector.eval()


def load_strict(detector: nn.Module, sd: Dict[str, Tensor]) -> None:
    """Load with zero missing and zero unexpected keys, filling aliased twins from each other."""
    expected = detector.state_dict()
    _fill_aliases(expected, sd)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            "the checkpoint does not fit the architecture read from it: "
            + "; ".join(
                f"{label} {len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                if keys
            )
        )
    detector.load_state_dict(sd, strict=True)


def _fill_aliases(expected: Mapping[str, Tensor], sd: Dict[str, Tensor]) -> None:
    """A module registered under two names (BGA/LFEA ``conv2d``/``block``) needs both keys;
    a deduplicated save may carry only one, so copy it to the twin."""
    by_storage: Dict[Tuple[int, Tuple[int, ...]], List[str]] = {}
    for key, tensor in expected.items():
        if tensor.numel():
            by_storage.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(key)
    for twins in by_storage.values():
        present = [k for k in twins if k in sd]
        if present and len(present) < len(twins):
            for key in twins:
                sd.setdefault(key, sd[present[0]])


def load_detector(
    path: PathLike, device: Union[str, torch.device] = "cpu", fast: bool = True
) -> DetectorBase:
    """Load an mmrotate UnravelNet/LEGNet Oriented R-CNN or Refined-Det checkpoint, ready for inference.

    ``fast`` (default) folds the BatchNorms into the convs, once, and runs the backbone
    channels-last on CPU (:func:`.folding.prepare_for_inference`): less backbone time, the
    same detections up to float32 rounding, well inside the golden parity tolerances.
    The checkpoint's tensors stay as loaded, and training mode runs unfolded. ``fast=False``
    tracks mmrotate's operation order most closely.
    """
    sd, meta = read_checkpoint(path)
    check_finite(sd)
    detector = build_detector(sd, meta)
    detector.info["checkpoint"] = str(path)
    detector = detector.to(device).eval()
    return prepare_for_inference(detector) if fast else detector


# saving ---------------------------------------------------------------------------------
def save_checkpoint(detector: DetectorBase, path: PathLike, meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``{'meta', 'state_dict'}`` as mmcv does, with CLASSES, loadable by mmrotate too."""
    full_meta: Dict[str, Any] = dict(meta or {})
    full_meta.setdefault("CLASSES", tuple(detector.classes))
    full_meta.setdefault("time", time.asctime())
    state = {k: v.detach().cpu() for k, v in detector.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": full_meta, "state_dict": state}, path)
