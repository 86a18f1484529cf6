"""Generate the Refined-Det golden data with the upstream reference stack.

Runs in the reference environment (mmcv-full 1.7.2 with CPU ops, mmdet 2.28.2, mmrotate 0.3.4),
never in the project's own:

    REFENV_PYTHON reference/gen_refined_det.py --source /path/to/Refined-Det --out tests/golden/refined_det

``--source`` is a checkout or a bare git directory of the public repository shenhaibb/Refined-Det.
Five of its files are used (``FILES``): the detector ``refined_det.py``, the head ``fr_head.py``,
the fork's own copies of the two heads it inherits from (``rotated_anchor_head.py``,
``rotated_retina_head.py``: their target assignment hands per-level anchors to the assigner) and
the assigner ``cla.py``. They are copied into a temporary folder with their relative imports made
absolute and a few device-neutral edits (``EDITS``: the reference cannot otherwise be built or
trained on a CPU), imported (which registers them over upstream mmrotate 0.3.4), and deleted
again; nothing of them is written to the output.

``--ops``: ``mmcv`` (default) runs mmcv-full's compiled CPU kernels (DeformConv2d forward and
backward, nms_rotated, box_iou_rotated). ``independent`` is for a stack whose mmcv has no
compiled ops (mmcv 1.7.2 without ``_ext``): a stub ``mmcv._ext`` lets mmcv.ops import, mmcv's
DeformConv2d is routed to torchvision's deform_conv2d (the same DCNv1 rule: bilinear, each corner
zero outside, nothing outside (-1, H) x (-1, W)), and ``nms_rotated`` / ``box_iou_rotated`` to
exact float64 polygon clipping written here (suppress at IoU >= thr, as mmcv's CPU kernel). Either
way mmcv's ``points_in_polygons`` (CUDA only in 1.7.2) is replaced by an equal inclusive test.
Every other step stays upstream code. ``info.json`` records which ops were used.

What is written (see tests/golden/refined_det/README.md); the run is deterministic (byte-identical
files on one machine):
- ``reduced_model.pth.xz``: an mmcv-layout checkpoint of a reduced Refined-Det (ResNet-18 at base
  width 8, 32-channel FPN and head, 15 classes) with random weights on a bfloat16 grid and
  calibrated BatchNorms, xz-compressed;
- ``reduced_model_io.npz``: its input and every stage's tensors, on a 160x224 image;
- ``train_step.npz`` + ``train_step_info.json``: one ``forward_train`` step of that model
  (``refined_det_step.py``);
- ``resnet50_io.npz`` + ``resnet50_backbone.pth.xz``: a ResNet-50 (bottleneck) backbone at base width 4;
- ``op_deform_conv.npz``: mmcv's DeformConv2d on random data;
- ``cla_assign.npz``: the fork's CLA on anchors and jittered boxes;
- ``state_dict_keys_r50.txt``/``_r101.txt``: the full-size models' keys, shapes and parameter counts;
- ``info.json``: versions, settings, margins of the discrete decisions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

#: The fork's files, in import order, under the module names they are loaded as. The two heads it
#: inherits from are its own copies (their target assignment passes per-level anchors to CLA).
FILES = {
    "refdet_anchor_head": "mmrotate/models/dense_heads/rotated_anchor_head.py",
    "refdet_retina_head": "mmrotate/models/dense_heads/rotated_retina_head.py",
    "refdet_cla": "mmrotate/core/bbox/assigners/cla.py",
    "refdet_fr_head": "mmrotate/models/dense_heads/fr_head.py",
    "refdet_detector": "mmrotate/models/detectors/refined_det.py",
}
#: Relative imports of the fork's own files point at their loaded copies.
OWN_MODULES = {"rotated_anchor_head": "refdet_anchor_head", "rotated_retina_head": "refdet_retina_head"}
#: Text edits made to the temporary copies, besides absolute imports: (file key, old, new, why).
#: The fork's two heads re-register upstream names (force=True lets them replace upstream's);
#: CLA allocates CUDA tensors, which a CPU-only machine cannot even construct: device-neutral
#: instead (its constant made on the CPU and moved to the inputs' device where it is used).
#: FRHead.get_anchors passes the device as grid_priors' second positional argument, which is the
#: dtype (harmless on CUDA, where the default device is right; on the CPU it asks for CUDA).
EDITS = [
    ("refdet_fr_head", "self.anchor_generator.grid_priors(featmap_sizes, device)",
     "self.anchor_generator.grid_priors(featmap_sizes, device=device)"),
    ("refdet_anchor_head", "@ROTATED_HEADS.register_module()", "@ROTATED_HEADS.register_module(force=True)"),
    ("refdet_retina_head", "@ROTATED_HEADS.register_module()", "@ROTATED_HEADS.register_module(force=True)"),
    ("refdet_cla", "], device='cuda').float()[:, None]", "]).float()[:, None]"),
    ("refdet_cla", "self.grid_offset.repeat(", "self.grid_offset.to(device).repeat("),
    ("refdet_cla", "anchor_generator.num_base_anchors[0], 1).cuda()",
     "anchor_generator.num_base_anchors[0], 1).to(gt_bboxes_xyxy.device)"),
]
# Plain constants of the project (no torch needed): the class names and mmdet's Normalize of the configs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qgis_unravel.detector.config import DOTA_V1_CLASSES as DOTA_CLASSES  # noqa: E402
from qgis_unravel.detector.config import PIXEL_MEAN, PIXEL_STD  # noqa: E402

MEAN = np.array(PIXEL_MEAN, dtype=np.float32)
STD = np.array(PIXEL_STD, dtype=np.float32)
STRIDES = [8, 16, 32, 64, 128]
IMAGE_HW = (160, 224)
WIDTH = 32
NMS_PRE = 300  # the configs' 2000 exceeds every level of a 160x224 image; 300 exercises the top-k at P3


# source -------------------------------------------------------------------------------------
def read_source(source: Path, rel: str) -> str:
    """A file of the repository from a checkout or a bare git directory (HEAD)."""
    if (source / rel).is_file():
        return (source / rel).read_text(encoding="utf-8")
    out = subprocess.run(
        ["git", f"--git-dir={source}", "show", f"HEAD:{rel}"], check=True, capture_output=True, text=True
    )
    return out.stdout


def absolute_imports(text: str, rel: str) -> str:
    """``from ..x import y`` -> ``from mmrotate.models.x import y``, from the file's package;
    imports of the fork's own loaded files go to their copies (``OWN_MODULES``)."""
    package = rel[: -len(".py")].split("/")[:-1]

    def fix(match: re.Match) -> str:
        dots, rest = match.group(1), match.group(2)
        if len(dots) == 1 and rest in OWN_MODULES:
            return f"from {OWN_MODULES[rest]} import"
        base = package[: len(package) - (len(dots) - 1)]
        target = ".".join(base + ([rest] if rest else []))
        return f"from {target} import"

    return re.sub(r"^from (\.+)([\w.]*) import", fix, text, flags=re.M)


def edited(name: str, text: str) -> str:
    """The ``EDITS`` of one file, each required to apply exactly once."""
    for key, old, new in EDITS:
        if key == name:
            assert text.count(old) == 1, f"{name}: expected one {old!r}"
            text = text.replace(old, new)
    return text


def register(source: Path) -> None:
    """Import the fork's files (imports rewritten, ``EDITS`` applied) from a temporary folder.

    Their visualiser import (a module outside mmrotate) is stubbed; mmcv's ``points_in_polygons``,
    which CLA uses and which mmcv 1.7.2 implements only for CUDA, is replaced by
    :func:`exact_points_in_polygons` (the same inclusive test, on any device).
    """
    import types

    import mmrotate  # noqa: F401  (registers the upstream modules first)

    sys.modules.setdefault("assigner_visualization", types.SimpleNamespace(AssignerVisualizer=None))
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in FILES.items():
            path = Path(tmp) / f"{name}.py"
            path.write_text(edited(name, absolute_imports(read_source(source, rel), rel)), encoding="utf-8")
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    sys.modules["refdet_cla"].points_in_polygons = exact_points_in_polygons


# independent ops (for an mmcv without compiled kernels) -----------------------------------
def stub_ext() -> None:
    """Let ``import mmcv.ops`` succeed without mmcv._ext: every kernel raises if actually called."""
    import types

    def missing(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def fail(*args, **kwargs):
            raise RuntimeError(f"mmcv._ext.{name} is not compiled here")

        return fail

    module = types.ModuleType("mmcv._ext")
    module.__getattr__ = missing  # type: ignore[attr-defined]
    sys.modules["mmcv._ext"] = module


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip(subject: np.ndarray, clipper: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: ``subject`` clipped by the convex, counter-clockwise ``clipper``."""
    out = subject
    for i in range(len(clipper)):
        a, b = clipper[i], clipper[(i + 1) % len(clipper)]
        if len(out) == 0:
            break
        side = (b[0] - a[0]) * (out[:, 1] - a[1]) - (b[1] - a[1]) * (out[:, 0] - a[0])
        points = []
        for j in range(len(out)):
            p, q, sp, sq = out[j], out[(j + 1) % len(out)], side[j], side[(j + 1) % len(out)]
            if sp >= 0:
                points.append(p)
            if (sp >= 0) != (sq >= 0):
                points.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(points)
    return out


def corners(box: np.ndarray) -> np.ndarray:
    """Corners of (cx, cy, w, h, a), counter-clockwise in the x-right/y-up sense of ``clip``."""
    cx, cy, w, h, a = box
    c, s = math.cos(a), math.sin(a)
    half = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    poly = half @ np.array([[c, -s], [s, c]]).T + np.array([cx, cy])
    edge1, edge2 = poly[1] - poly[0], poly[2] - poly[1]
    if edge1[0] * edge2[1] - edge1[1] * edge2[0] < 0:
        poly = poly[::-1].copy()
    return poly


def rotated_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = clip(corners(a), corners(b))
    area = polygon_area(inter) if len(inter) >= 3 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - area
    return area / union if union > 0 else 0.0


def exact_nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
    """Greedy rotated NMS in float64 polygon arithmetic; mmcv's return convention (dets, keep)."""
    boxes = dets.detach().double().numpy()
    order = torch.sort(scores.detach(), descending=True, stable=True)[1].numpy()
    keep, removed = [], np.zeros(len(order), dtype=bool)
    for i, idx in enumerate(order):
        if removed[i]:
            continue
        keep.append(int(idx))
        for j in range(i + 1, len(order)):
            if not removed[j] and rotated_iou(boxes[idx], boxes[order[j]]) >= iou_threshold:
                removed[j] = True
    keep_t = torch.tensor(keep, dtype=torch.long)
    return torch.cat([dets[keep_t], scores[keep_t][:, None]], dim=1), keep_t


def use_independent_ops() -> None:
    """Route mmcv's two compiled inference kernels to independent implementations."""
    import mmcv.ops.deform_conv as mmcv_deform
    import mmrotate.core.bbox.iou_calculators.rotate_iou2d_calculator as rotated_iou_module
    import mmrotate.core.post_processing.bbox_nms_rotated as mmrotate_nms
    import torchvision

    def deform(x, offset, weight, stride, padding, dilation, groups, deform_groups, *rest):
        assert groups == 1 and deform_groups == 1
        return torchvision.ops.deform_conv2d(x, offset, weight, None, stride, padding, dilation)

    mmcv_deform.deform_conv2d = deform
    mmrotate_nms.nms_rotated = exact_nms_rotated
    rotated_iou_module.box_iou_rotated = exact_box_iou_rotated


# model --------------------------------------------------------------------------------------
def reduced_config(depth: int = 18, base: int = 8, width: int = WIDTH, num_classes: int = 15) -> dict:
    """The DOTA config's model with a small ResNet and narrow FPN/head; train_cfg None (inference)."""
    stage = [base * 2**i * (4 if depth >= 50 else 1) for i in range(4)]
    return dict(
        type="RefinedDet",
        backbone=dict(
            type="ResNet",
            depth=depth,
            base_channels=base,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            frozen_stages=1,
            zero_init_residual=False,
            norm_cfg=dict(type="BN", requires_grad=True),
            norm_eval=True,
            style="pytorch",
            init_cfg=None,
        ),
        neck=dict(
            type="FPN",
            in_channels=stage,
            out_channels=width,
            start_level=1,
            add_extra_convs="on_input",
            num_outs=5,
        ),
        bbox_head=dict(
            type="FRHead",
            num_classes=num_classes,
            in_channels=width,
            stacked_convs=2,
            feat_channels=width,
            assign_by_circumhbbox=None,
            anchor_generator=dict(type="RotatedAnchorGenerator", scales=[4], ratios=[1.0], strides=STRIDES),
            bbox_coder=dict(
                type="DeltaXYWHAOBBoxCoder",
                angle_range="le90",
                norm_factor=None,
                edge_swap=True,
                proj_xy=True,
                target_means=(0.0,) * 5,
                target_stds=(1.0,) * 5,
            ),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="SmoothL1Loss", beta=0.11, loss_weight=1.0),
        ),
        train_cfg=None,
        test_cfg=dict(
            nms_pre=NMS_PRE, min_bbox_size=0, score_thr=0.05, nms=dict(iou_thr=0.1), max_per_img=2000
        ),
    )


def build(cfg: dict, width: int):
    from mmcv import ConfigDict
    from mmrotate.models import build_detector
    from mmrotate.models.detectors.utils import AlignConvModule

    model = build_detector(ConfigDict(cfg))
    # RefinedDet hard-codes AlignConvModule(256, ...); the reduced model needs it at its width.
    model.align_conv = AlignConvModule(width, STRIDES, 3)
    return model


def randomize(model, image: torch.Tensor) -> None:
    """Weights that give well-conditioned, non-trivial tensors at every stage (seeded)."""
    g = torch.Generator().manual_seed(2)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) or type(module).__name__ == "DeformConv2d":
            fan_in = module.weight[0].numel()
            gain = 2.0 if not name.startswith("neck") else 1.0
            module.weight.data = torch.randn(module.weight.shape, generator=g) * math.sqrt(gain / fan_in)
            if getattr(module, "bias", None) is not None:
                module.bias.data = torch.rand(module.bias.shape, generator=g) * 0.2 - 0.1
    calibrate_bn(model.backbone, image)
    calibrate_scales(model, image)


#: Output std each layer is scaled to (LSUV-style), so every stage has tensors of trained-like size.
TARGET_STD = {
    "bbox_head.retina_reg": 0.3,  # coarse deltas like a trained head's
    "bbox_head.retina_cls": 1.5,
    "bbox_head.cls_score_refine_conv": 0.3,
    "bbox_head.bbox_pred_refine_conv": 0.3,
}
CLS_BIAS_SHIFT = -3.0  # most cells background


def calibrate_scales(model, image: torch.Tensor) -> None:
    """Scale each neck/head/alignment conv, in forward order, to a target output std (default 1).

    One forward per layer measures that layer's output (over all levels, pass 1) and rescales its
    weight and bias; layers downstream see the rescaled input. Deterministic, no randomness.
    """
    with torch.no_grad():
        backbone = model.backbone(image)
        convs = [
            (n, m)
            for n, m in model.named_modules()
            if n.startswith(("neck", "bbox_head")) and isinstance(m, torch.nn.Conv2d)
        ]
        for name, module in convs:
            outputs = []
            handle = module.register_forward_hook(
                lambda mod, inp, out, store=outputs: store.append(out.flatten())
            )
            feats = model.neck(backbone)
            model.bbox_head(feats)
            handle.remove()
            std = float(torch.cat(outputs).std())
            scale = TARGET_STD.get(name, 1.0) / std
            module.weight.mul_(scale)
            module.bias.mul_(scale)
        model.bbox_head.retina_cls.bias.add_(CLS_BIAS_SHIFT)
        feats = model.neck(backbone)
        coarse_cls, coarse_reg, _, _, gates = model.bbox_head(feats)
        gated = tuple(x + x * g for x, g in zip(feats, gates))
        rois = model.bbox_head.refine_bboxes(coarse_cls, coarse_reg)
        for level, conv in enumerate(model.align_conv.ac):
            out = conv(gated[level], torch.cat([r[level] for r in rois]))
            conv.deform_conv.weight.mul_(1.0 / float(out.std()))


def on_coarse_grid(model) -> None:
    """Round every float tensor of the state dict to bfloat16 precision (8 significant bits).

    The values stay float32 and the model keeps its calibration (the rounding changes each
    weight by at most 0.4 %), but the low 16 bits of every number are zero, so the xz-compressed
    checkpoint is about half the size. The golden tensors are computed with the rounded weights.
    """
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.bfloat16().float())


def xz(path: Path) -> None:
    """Replace ``path`` by ``path.xz`` (tests/golden_data.py decompresses it for the tests)."""
    import lzma

    Path(f"{path}.xz").write_bytes(lzma.compress(path.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
    path.unlink()


def calibrate_bn(backbone, image: torch.Tensor) -> None:
    """BN running stats from one batch, then randomized affine/statistics (seeded)."""
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    backbone.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        backbone(image)
    g = torch.Generator().manual_seed(1)
    for m in bns:
        m.eval()
        m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
        m.bias.data = torch.rand(m.bias.shape, generator=g) * 0.5 - 0.25
        var = m.running_var.clamp(min=1e-2)
        m.running_mean += 0.2 * var.sqrt() * torch.randn(var.shape, generator=g)
        m.running_var = var * (torch.rand(var.shape, generator=g) * 1.5 + 0.5)


def scene(seed: int, hw=IMAGE_HW) -> np.ndarray:
    """The inference scene (``refined_det_scenes.scene``) at the golden size by default."""
    import refined_det_scenes

    return refined_det_scenes.scene(seed, hw)


def normalize(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((image.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1).copy())[None]


# stages -------------------------------------------------------------------------------------
def run_stages(model, img: torch.Tensor, score_thr: float) -> dict:
    """The reference's simple_test, step by step, keeping every intermediate."""
    h, w = img.shape[-2:]
    metas = [
        dict(
            img_shape=(h, w, 3),
            ori_shape=(h, w, 3),
            pad_shape=(h, w, 3),
            scale_factor=np.ones(4, np.float32),
            flip=False,
        )
    ]
    model.bbox_head.test_cfg.score_thr = score_thr
    out = {}
    with torch.no_grad():
        backbone = model.backbone(img)
        feats = model.neck(backbone)
        coarse_cls, coarse_reg, refine_cls, refine_reg, gates = model.bbox_head(feats)
        gated = tuple(x + x * g for x, g in zip(feats, gates))
        rois = model.bbox_head.refine_bboxes(coarse_cls, coarse_reg)
        aligned = model.align_conv(gated, rois)
        cls2, reg2, *_ = model.bbox_head(aligned)
        cls = [a + a * b for a, b in zip(cls2, refine_cls)]
        reg = [a + a * b for a, b in zip(reg2, refine_reg)]
        dets, labels = model.bbox_head.get_bboxes(cls, reg, metas, rescale=False, rois=rois)[0]
        simple = model.simple_test(img, metas, rescale=False)[0]
    for i, t in enumerate(backbone):
        out[f"backbone_out{i}"] = t[0]
    for lvl in range(5):
        out[f"fpn_out{lvl}"] = feats[lvl][0]
        out[f"coarse_cls_l{lvl}"] = coarse_cls[lvl][0]
        out[f"coarse_reg_l{lvl}"] = coarse_reg[lvl][0]
        out[f"refine_cls_l{lvl}"] = refine_cls[lvl][0]
        out[f"refine_reg_l{lvl}"] = refine_reg[lvl][0]
        out[f"gate_l{lvl}"] = gates[lvl][0]
        out[f"rois_l{lvl}"] = rois[0][lvl]
        out[f"aligned_l{lvl}"] = aligned[lvl][0]
        out[f"cls_score_l{lvl}"] = cls[lvl][0]
        out[f"bbox_pred_l{lvl}"] = reg[lvl][0]
    out["det_bboxes"], out["det_labels"] = dets, labels
    # the stepwise path must be the reference's own simple_test
    for c in range(len(simple)):
        mine = dets[labels == c].numpy()
        assert np.allclose(mine, simple[c], atol=0, rtol=0), f"stepwise != simple_test for class {c}"
    return {k: v.detach().numpy() for k, v in out.items()}


def pick_threshold(model, img: torch.Tensor) -> tuple:
    """A score threshold in the widest gap of the sorted top-k scores between ranks 150 and 400."""
    with torch.no_grad():
        feats = model.extract_feat(img)
        coarse_cls, coarse_reg, refine_cls, _, gates = model.bbox_head(feats)
        rois = model.bbox_head.refine_bboxes(coarse_cls, coarse_reg)
        aligned = model.align_conv(tuple(x + x * g for x, g in zip(feats, gates)), rois)
        cls2, *_ = model.bbox_head(aligned)
    scores = []
    for a, b in zip(cls2, refine_cls):
        s = (a + a * b)[0].permute(1, 2, 0).reshape(-1, a.shape[1]).sigmoid()
        if s.shape[0] > NMS_PRE:
            s = s[s.max(1).values.topk(NMS_PRE).indices]
        scores.append(s.reshape(-1))
    values = torch.cat(scores).sort(descending=True).values.numpy()
    gaps = values[150:400] - values[151:401]
    i = int(np.argmax(gaps)) + 150
    return float((values[i] + values[i + 1]) / 2), float(gaps.max()), i + 1


# ops ----------------------------------------------------------------------------------------
def deform_conv_golden() -> dict:
    from mmcv.ops import DeformConv2d

    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 9, 13, generator=g)
    conv = DeformConv2d(6, 5, 3, padding=1, bias=False)
    conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.3
    offset = torch.randn(2, 18, 9, 13, generator=g) * 2.5  # many taps outside the map
    offset[:, :, 0, 0] = -1.0  # exact integer offsets, boundary of the zero rule
    with torch.no_grad():
        out = conv(x, offset)
    return {
        "input": x.numpy(),
        "offset": offset.numpy(),
        "weight": conv.weight.detach().numpy(),
        "output": out.numpy(),
    }


def key_list(model) -> str:
    lines = [
        f"{k}\t{list(v.shape)}\t{str(v.dtype).replace('torch.', '')}" for k, v in model.state_dict().items()
    ]
    return "\n".join(lines) + "\n"


def parameter_counts(model) -> dict:
    parts = {
        name: sum(p.numel() for p in getattr(model, name).parameters())
        for name in ("backbone", "neck", "bbox_head", "align_conv")
    }
    parts["total"] = sum(p.numel() for p in model.parameters())
    return parts


# cross-grid label assignment ----------------------------------------------------------------
CLA_FILE = "mmrotate/core/bbox/assigners/cla.py"


def exact_points_in_polygons(points: torch.Tensor, polygons: torch.Tensor) -> torch.Tensor:
    """(P, G) 1.0 where point p is inside (or on) convex polygon g: equal-signed edge cross products."""
    pts = points.double()
    corners_ = polygons.double().reshape(-1, 4, 2)
    edges = corners_.roll(-1, dims=1) - corners_
    rel = pts[:, None, None, :] - corners_[None]
    cross = edges[None, ..., 0] * rel[..., 1] - edges[None, ..., 1] * rel[..., 0]
    inside = (cross >= 0).all(-1) | (cross <= 0).all(-1)
    return inside.to(points.dtype)


def exact_box_iou_rotated(bboxes1, bboxes2, mode="iou", aligned=False, clockwise=True):
    assert mode == "iou" and not aligned
    a, b = bboxes1.detach().double().numpy(), bboxes2.detach().double().numpy()
    out = np.array([[rotated_iou(x, y) for y in b] for x in a]).reshape(len(a), len(b))
    return torch.from_numpy(out).to(bboxes1.dtype)


#: train_cfg.assigner of the Refined-Det configs.
CLA_CFG = dict(
    type="CLA",
    pos_iou_thr=0.5,
    neg_iou_thr=0.4,
    min_pos_iou=0,
    ignore_iof_thr=-1,
    iou_calculator=dict(type="RBboxOverlaps2D"),
)


def load_cla():
    """The fork's CLA assigner, built from the configs' settings (``register`` made it CPU-capable)."""
    from mmrotate.core import build_assigner

    return build_assigner(CLA_CFG)


def cla_golden() -> dict:
    """CLA on the square anchors (pass 1) and on jittered boxes (pass 2) of a 256 x 320 image."""
    import types

    cla = load_cla()
    height, width = 256, 320
    sizes = [(-(-height // s), -(-width // s)) for s in STRIDES]
    g = torch.Generator().manual_seed(11)
    anchors = []
    for (h, w), s in zip(sizes, STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h) * float(s), torch.arange(w) * float(s), indexing="ij")
        n = h * w
        anchors.append(
            torch.stack(
                [
                    xs.reshape(-1),
                    ys.reshape(-1),
                    torch.full((n,), 4.0 * s),
                    torch.full((n,), 4.0 * s),
                    torch.zeros(n),
                ],
                dim=1,
            )
        )
    count = 12
    gts = torch.stack(
        [
            torch.rand(count, generator=g) * (width - 40) + 20,
            torch.rand(count, generator=g) * (height - 40) + 20,
            torch.rand(count, generator=g) * 90 + 10,
            torch.rand(count, generator=g) * 30 + 6,
            torch.rand(count, generator=g) * math.pi - math.pi / 2,
        ],
        dim=1,
    )
    gts[:, 2:4] = torch.stack([gts[:, 2:4].max(1).values, gts[:, 2:4].min(1).values], dim=1)
    labels = torch.randint(0, 15, (count,), generator=g)
    jittered = [
        a + torch.randn(a.shape, generator=g) * torch.tensor([4.0, 4.0, 6.0, 6.0, 0.3]) for a in anchors
    ]
    for j in jittered:
        j[:, 2:4] = j[:, 2:4].abs() + 1
    generator = types.SimpleNamespace(base_sizes=list(STRIDES), featmap_sizes=sizes, num_base_anchors=[1] * 5)
    meta = dict(pad_shape=(height, width, 3), img_shape=(height, width, 3))
    flags = [torch.ones(a.shape[0], dtype=torch.bool) for a in anchors]
    out = {"gt_bboxes": gts.numpy(), "gt_labels": labels.numpy(), "pad_hw": np.array([height, width])}
    for name, boxes in (("anchors", anchors), ("jittered", jittered)):
        result = cla.assign(boxes, flags, flags, gts, labels, generator, meta)
        out[f"{name}_boxes"] = torch.cat(boxes).numpy()
        out[f"{name}_overlaps"] = cla.iou_calculator(gts, torch.cat(boxes)).numpy()
        out[f"{name}_assigned"] = result.gt_inds.numpy()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="Refined-Det checkout or bare git dir")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ops", choices=("mmcv", "independent"), default="mmcv")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.ops == "independent":
        stub_ext()
    register(args.source)
    if args.ops == "independent":
        use_independent_ops()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    info = {"versions": {}, "image_hw": IMAGE_HW, "width": WIDTH, "nms_pre": NMS_PRE, "ops": args.ops}
    import mmcv
    import mmdet
    import mmrotate

    info["versions"] = {
        "torch": torch.__version__,
        "mmcv": mmcv.__version__,
        "mmdet": mmdet.__version__,
        "mmrotate": mmrotate.__version__,
        "numpy": np.__version__,
    }

    # full-size models: keys and parameter counts only
    for depth in (50, 101):
        torch.manual_seed(0)
        full = build(reduced_config(depth, 64, 256), 256)
        (out / f"state_dict_keys_r{depth}.txt").write_text(key_list(full), encoding="utf-8")
        info[f"parameters_r{depth}"] = parameter_counts(full)
        info[f"stacked_convs_built_r{depth}"] = len(full.bbox_head.cls_convs)
        del full

    # reduced detector
    image = scene(0)
    img = normalize(image)
    torch.manual_seed(0)
    model = build(reduced_config(), WIDTH)
    info["stacked_convs_config"] = 2
    info["stacked_convs_built"] = len(model.bbox_head.cls_convs)
    randomize(model, img)
    on_coarse_grid(model)
    model.eval()
    thr, gap, kept = pick_threshold(model, img)
    info.update(score_thr=thr, score_gap=gap, candidates=kept)
    stages = run_stages(model, img, thr)
    info["n_dets"] = int(stages["det_bboxes"].shape[0])
    info["parameters_reduced"] = parameter_counts(model)
    # mmcv's checkpoint layout; written directly because save_checkpoint stamps the time into meta
    meta = {"CLASSES": DOTA_CLASSES, "note": "random weights", "mmcv_version": mmcv.__version__}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, out / "reduced_model.pth")
    xz(out / "reduced_model.pth")
    np.savez_compressed(out / "reduced_model_io.npz", image_rgb_uint8=image, input=img[0].numpy(), **stages)

    # one training step of the same weights
    import refined_det_step

    torch.manual_seed(0)
    trainable = build(dict(reduced_config(), train_cfg=refined_det_step.train_cfg(CLA_CFG)), WIDTH)
    trainable.load_state_dict(model.state_dict(), strict=True)
    arrays, step_info = refined_det_step.generate(trainable, IMAGE_HW, normalize)
    np.savez_compressed(out / "train_step.npz", **arrays)
    (out / "train_step_info.json").write_text(json.dumps(step_info, indent=1), encoding="utf-8")
    del trainable

    # ResNet-50 (bottleneck) backbone numerics
    from mmdet.models import build_backbone

    torch.manual_seed(0)
    r50 = build_backbone(
        dict(
            type="ResNet",
            depth=50,
            base_channels=4,
            out_indices=(0, 1, 2, 3),
            norm_cfg=dict(type="BN", requires_grad=True),
            style="pytorch",
        )
    )
    small = normalize(scene(1, (64, 96)))
    g = torch.Generator().manual_seed(3)
    for m in r50.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / m.weight[0].numel())
    calibrate_bn(r50, small)
    on_coarse_grid(r50)
    with torch.no_grad():
        feats = r50(small)
    torch.save({"state_dict": r50.state_dict()}, out / "resnet50_backbone.pth")
    xz(out / "resnet50_backbone.pth")
    np.savez_compressed(
        out / "resnet50_io.npz",
        input=small[0].numpy(),
        **{f"out{i}": f[0].numpy() for i, f in enumerate(feats)},
    )

    np.savez_compressed(out / "op_deform_conv.npz", **deform_conv_golden())
    cla = cla_golden()
    np.savez_compressed(out / "cla_assign.npz", **cla)
    info["cla_positives"] = {k: int((cla[k] > 0).sum()) for k in ("anchors_assigned", "jittered_assigned")}
    (out / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
