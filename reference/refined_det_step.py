"""One training step of the reduced Refined-Det through the fork's ``RefinedDet.forward_train``.

Imported by ``gen_refined_det.py`` inside the reference environment, after the fork's files are
registered. Same weights as ``reduced_model.pth``, the configs' ``train_cfg`` (CLA with
pos 0.5 / neg 0.4 / min_pos 0, ``allowed_border=-1``, ``pos_weight=-1``: PseudoSampler, no
sampling), a batch of two non-square synthetic scenes with their oriented boxes and labels, the
model in train mode (the backbone keeps ``norm_eval`` and ``frozen_stages=1``, so BatchNorm uses
its running statistics and the stem and layer1 do not train).

Nothing in this step is random: single-stage heads with focal loss do not sample, Refined-Det has
no dropout or drop-path, and the data pipeline (flips, resizing) is not part of it.

Recorded: the CLA assignment of each (pass, image) (the assigner's ``gt_inds`` over the
level-concatenated priors) and the rotated IoU matrix it used (mmcv's ``box_iou_rotated``,
objects x priors), the pass-2 priors (the detached coarse boxes), every loss term per
level and summed, the total, and the gradients of a few parameters after ``backward()`` of the
summed losses.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from refined_det_scenes import scene_with_objects

SCENE_SEEDS = (2, 3)
#: From the stem (frozen: no gradient, not listed) to the alignment convs.
GRAD_PARAMS = (
    "backbone.layer2.0.conv1.weight",
    "backbone.layer4.1.conv2.weight",
    "neck.lateral_convs.0.conv.weight",
    "neck.fpn_convs.3.conv.weight",
    "neck.fpn_convs.4.conv.bias",
    "bbox_head.cls_convs.0.conv.weight",
    "bbox_head.reg_convs.3.conv.bias",
    "bbox_head.retina_cls.weight",
    "bbox_head.retina_reg.bias",
    "bbox_head.conv_1_3.weight",
    "bbox_head.conv_3_1.bias",
    "bbox_head.cls_score_refine_conv.weight",
    "bbox_head.bbox_pred_refine_conv.weight",
    "bbox_head.sigmoid_conv.weight",
    "align_conv.ac.0.deform_conv.weight",
    "align_conv.ac.2.deform_conv.weight",
)


def train_cfg(cla_cfg: Dict[str, Any]) -> Dict[str, Any]:
    return dict(assigner=dict(cla_cfg), allowed_border=-1, pos_weight=-1, debug=False)


class Recorder:
    """Keeps what the assigner and the coarse-box decoding computed during forward_train."""

    def __init__(self, model) -> None:
        self.assigned: List[torch.Tensor] = []
        self.overlaps: List[torch.Tensor] = []
        self.rois: List[List[torch.Tensor]] = []
        head = model.bbox_head
        assign, refine, iou = head.assigner.assign, head.refine_bboxes, head.assigner.iou_calculator

        def recording_iou(*args, **kwargs):
            overlaps = iou(*args, **kwargs)
            self.overlaps.append(overlaps.clone())
            return overlaps

        def recording_assign(*args, **kwargs):
            result = assign(*args, **kwargs)
            self.assigned.append(result.gt_inds.clone())
            return result

        def recording_refine(*args, **kwargs):
            rois = refine(*args, **kwargs)
            self.rois = rois
            return rois

        head.assigner.assign = recording_assign
        head.assigner.iou_calculator = recording_iou
        head.refine_bboxes = recording_refine


def generate(model, hw: Tuple[int, int], normalize) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Run one step of ``model`` (built with ``train_cfg``, weights loaded) on two scenes."""
    scenes = [scene_with_objects(seed, hw) for seed in SCENE_SEEDS]
    batch = torch.cat([normalize(s[0]) for s in scenes])
    gt_boxes = [torch.from_numpy(s[1]) for s in scenes]
    gt_labels = [torch.from_numpy(s[2]) for s in scenes]
    h, w = hw
    shape, scale = (h, w, 3), np.ones(4, np.float32)
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, scale_factor=scale, flip=False)
    metas = [dict(meta) for _ in scenes]
    model.train()
    recorder = Recorder(model)
    model.zero_grad()
    losses = model.forward_train(batch, metas, gt_boxes, gt_labels)
    total, log_vars = model._parse_losses(losses)
    total.backward()
    params = dict(model.named_parameters())

    arrays: Dict[str, Any] = {"images_rgb_uint8": np.stack([s[0] for s in scenes])}
    for i, s in enumerate(scenes):
        arrays[f"gt_boxes{i}"], arrays[f"gt_labels{i}"] = s[1], s[2]
    calls = 2 * len(scenes)
    assert len(recorder.assigned) == len(recorder.overlaps) == calls, "one CLA call per (pass, image)"
    for n, (assigned, overlaps) in enumerate(zip(recorder.assigned, recorder.overlaps)):
        stage, i = ("base", "refine")[n // len(scenes)], n % len(scenes)
        arrays[f"{stage}_assigned{i}"] = assigned
        arrays[f"{stage}_overlaps{i}"] = overlaps
    for i, levels in enumerate(recorder.rois):
        arrays[f"refine_priors{i}"] = torch.cat(levels).detach()
    for key, value in losses.items():
        per_level = torch.stack([v.detach() for v in value])
        arrays[f"{key}_per_level"] = per_level
        arrays[key] = per_level.sum()
    arrays["loss_total"] = total.detach()
    for name in GRAD_PARAMS:
        assert params[name].grad is not None, name
        arrays[f"grad.{name}"] = params[name].grad
    frozen = [n for n, p in params.items() if not p.requires_grad]
    arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in arrays.items()}
    info = {
        "scene_seeds": list(SCENE_SEEDS),
        "image_hw": list(hw),
        "gt_per_image": [int(len(b)) for b in gt_boxes],
        "positives": {k: int((v > 0).sum()) for k, v in arrays.items() if "_assigned" in k},
        "ignored": {k: int((v < 0).sum()) for k, v in arrays.items() if "_assigned" in k},
        "losses": {k: float(v) for k, v in log_vars.items()},
        "grad_params": list(GRAD_PARAMS),
        "frozen_parameters": len(frozen),
        "random": "none: no sampling (PseudoSampler), no dropout or drop-path, no data augmentation",
    }
    return arrays, info
