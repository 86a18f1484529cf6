"""One training step of the reduced UnravelNet Oriented R-CNN through mmrotate's ``forward_train``.

Same weights as ``reduced_model`` (drop-path rate 0, so the step is deterministic; BatchNorm in
train mode uses the batch's statistics), a batch of two synthetic scenes with their oriented
boxes and labels. Recorded: the RPN's anchor targets and sampled anchors, the training
proposals, the sampled RoIs with their targets, every loss term, and the gradients of a few
parameters after ``backward()`` of the summed losses.

Sampling randomness is **bypassed**, not seeded: mmdet's ``RandomSampler.random_choice`` (used by
the RPN) and mmrotate's ``RRandomSampler.random_choice`` (R-CNN) are replaced by "the first
``num`` candidates in index order". The project's tests apply the same rule to
``qgis_unravel.training.assign`` and so reproduce the same samples; mmdet then sorts the sampled
indices (``unique()``), which the recorded indices reflect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from . import models
from .common import img_metas, normalize, save_json, save_npz, synthetic_scene

SIZE = 256
SCENE_SEEDS = (2, 3)
GRAD_PARAMS = (
    "backbone.Stem.proj.weight",
    "backbone.norm0.weight",
    "neck.fpn_convs.0.conv.weight",
    "rpn_head.rpn_conv.weight",
    "rpn_head.rpn_reg.bias",
    "roi_head.bbox_head.shared_fcs.1.weight",
    "roi_head.bbox_head.fc_cls.weight",
    "roi_head.bbox_head.fc_reg.bias",
)


def first_candidates(self, gallery, num):
    """Deterministic stand-in for RandomSampler.random_choice: the first ``num`` candidates."""
    assert len(gallery) >= num
    return gallery[:num]


def bypass_random_sampling() -> None:
    from mmdet.core.bbox.samplers import RandomSampler
    from mmrotate.core.bbox.samplers import RRandomSampler

    RandomSampler.random_choice = first_candidates
    RRandomSampler.random_choice = first_candidates


class Recorder:
    """Wraps a few bound methods of the model to keep what they computed."""

    def __init__(self, model) -> None:
        self.rpn_targets: List[tuple] = []
        self.proposals: List[torch.Tensor] = []
        self.sampling: List[Any] = []
        self.roi_outputs: Dict[str, torch.Tensor] = {}
        rpn, roi = model.rpn_head, model.roi_head
        self._wrap(rpn, "_get_targets_single", lambda out: self.rpn_targets.append(out))
        self._wrap(rpn, "forward_train", lambda out: self.proposals.extend(out[1]))
        self._wrap(roi.bbox_sampler, "sample", lambda out: self.sampling.append(out))
        self._wrap(roi, "_bbox_forward", lambda out: self.roi_outputs.update(out))

    @staticmethod
    def _wrap(obj, name: str, keep) -> None:
        original = getattr(obj, name)

        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            keep(out)
            return out

        setattr(obj, name, wrapper)


def generate(out_dir: Path, state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    from mmrotate.core import rbbox2roi

    bypass_random_sampling()
    cfg = models.load_config("unravelnet", **models.REDUCED, drop_path_rate=0.0)
    model = models.build(cfg)
    model.load_state_dict(state_dict, strict=True)
    model.train()
    scenes = [synthetic_scene(seed, SIZE) for seed in SCENE_SEEDS]
    images = np.stack([s[0] for s in scenes])
    batch = torch.from_numpy(np.stack([normalize(s[0]) for s in scenes]))
    gt_boxes = [torch.from_numpy(s[1]) for s in scenes]
    gt_labels = [torch.from_numpy(s[2]) for s in scenes]
    recorder = Recorder(model)
    losses = model.forward_train(batch, img_metas(SIZE, len(scenes)), gt_boxes, gt_labels)
    total, log_vars = model._parse_losses(losses)
    model.zero_grad()
    total.backward()
    params = dict(model.named_parameters())

    arrays: Dict[str, Any] = {"images_rgb_uint8": images}
    for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        arrays[f"gt_boxes{i}"] = boxes
        arrays[f"gt_labels{i}"] = labels
    for i, (labels, label_w, targets, _, _, _, _) in enumerate(recorder.rpn_targets):
        # Outputs are mapped back to all anchors (level, y, x, k order); mmdet's RPN labels are
        # 0 = object (the single class) and 1 = background; weight 0 = not sampled.
        sampled = label_w > 0
        pos = torch.nonzero(sampled & (labels == 0)).flatten()
        neg = torch.nonzero(sampled & (labels == 1)).flatten()
        arrays[f"rpn_pos_inds{i}"] = pos
        arrays[f"rpn_neg_inds{i}"] = neg
        arrays[f"rpn_pos_targets{i}"] = targets[pos]
        arrays[f"rpn_label_weight_sum{i}"] = label_w.sum()
    for i, proposals in enumerate(recorder.proposals):
        arrays[f"proposals{i}"] = proposals.detach()
    sampling = recorder.sampling
    labels, _, bbox_targets, _ = model.roi_head.bbox_head.get_targets(
        sampling, gt_boxes, gt_labels, model.roi_head.train_cfg)
    arrays.update(
        rois=rbbox2roi([s.bboxes for s in sampling]).detach(),
        roi_labels=labels.long(),
        roi_bbox_targets=bbox_targets,
        roi_cls_score=recorder.roi_outputs["cls_score"].detach(),
        roi_bbox_pred=recorder.roi_outputs["bbox_pred"].detach(),
    )
    for i, s in enumerate(sampling):
        arrays[f"roi_pos_inds{i}"] = s.pos_inds.long()
        arrays[f"roi_neg_inds{i}"] = s.neg_inds.long()
    for key, value in losses.items():
        if isinstance(value, (list, tuple)):  # RPN terms come per FPN level
            arrays[f"{key}_per_level"] = torch.stack([v.detach() for v in value])
            arrays[key] = sum(v.detach() for v in value)
        else:
            arrays[key] = value.detach()
    arrays["loss_total"] = total.detach()
    for name in GRAD_PARAMS:
        arrays[f"grad.{name}"] = params[name].grad
    # Whole: the batch, the proposals (the RoI sampling tests start from them) and everything
    # small; the RoI head outputs and the larger gradients are only compared, so sampled.
    save_npz(out_dir / "train_step.npz", arrays,
             whole=lambda key: not key.startswith(("grad.", "roi_cls_score", "roi_bbox_pred")))
    info = {
        "scene_seeds": list(SCENE_SEEDS),
        "image_size": SIZE,
        "gt_per_image": [int(len(b)) for b in gt_boxes],
        "rpn_samples": [[int(len(arrays[f"rpn_pos_inds{i}"])), int(len(arrays[f"rpn_neg_inds{i}"]))]
                        for i in range(len(recorder.rpn_targets))],
        "roi_samples": [[int(len(s.pos_inds)), int(len(s.neg_inds))] for s in sampling],
        "losses": {k: float(v) for k, v in log_vars.items()},
        "grad_params": list(GRAD_PARAMS),
        "sampling": "RandomSampler/RRandomSampler.random_choice replaced by the first num candidates",
        "drop_path_rate": 0.0,
    }
    save_json(out_dir / "train_step_info.json", info)
    return info
