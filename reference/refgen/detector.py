"""Every stage of a reduced detector on one scene: backbone, FPN, RPN, RoI head, detections.

The R-CNN score threshold is raised from the config's 0.05 (random weights give nearly uniform
softmax scores, so 0.05 keeps almost every candidate and rotated NMS dominates the run): it is
placed in the widest gap of the sorted foreground scores between ranks 400 and 800, so no score
sits near it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from . import models
from .common import (
    DOTA_CLASSES,
    img_metas,
    normalize,
    save_checkpoint_xz,
    save_json,
    save_npz,
    synthetic_scene,
)

SIZE = 256
THR_RANKS = (400, 800)

# Arrays stored whole in ``<stem>_io.npz``; the others are stored as samples (common.save_npz).
# Whole: what a test feeds to the project's code (the image, the input, and for UnravelNet the
# backbone, FPN and RPN maps and the proposals, which the stage tests start from) and what is
# small. LEGNet's backbone outputs stay whole as well: its backbone is the code only LEGNet
# has; its later stages run the same heads as UnravelNet's, which are checked on whole maps.
WHOLE = {
    "unravelnet": ("image_rgb_uint8", "input", "backbone_out", "fpn_out", "rpn_cls_score", "rpn_bbox_pred",
                   "proposals", "roi_levels", "det_"),
    "legnet": ("image_rgb_uint8", "input", "backbone_out", "proposals", "roi_levels", "det_"),
}


def auto_score_thr(fg_scores: torch.Tensor) -> float:
    ranked = fg_scores.flatten().sort(descending=True).values
    lo, hi = THR_RANKS
    window = ranked[lo : hi + 1]
    gaps = window[:-1] - window[1:]
    i = int(gaps.argmax())
    return round(float(window[i] + window[i + 1]) / 2, 6)


@torch.no_grad()
def stages(model, image: torch.Tensor, metas) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(arrays, margins) of every stage for one image (batch dim dropped)."""
    from mmrotate.core import rbbox2roi

    arrays: Dict[str, Any] = {}
    outs = model.backbone(image)
    for i, o in enumerate(outs):
        arrays[f"backbone_out{i}"] = o[0]
    feats = model.neck(outs)
    for i, f in enumerate(feats):
        arrays[f"fpn_out{i}"] = f[0]
    cls_scores, bbox_preds = model.rpn_head(feats)
    sizes = [c.shape[-2:] for c in cls_scores]
    anchors = model.rpn_head.prior_generator.grid_priors(sizes, device=image.device)
    margins: Dict[str, Any] = {}
    for i, (c, b, a) in enumerate(zip(cls_scores, bbox_preds, anchors)):
        arrays[f"rpn_cls_score_l{i}"] = c[0]
        arrays[f"rpn_bbox_pred_l{i}"] = b[0]
        arrays[f"rpn_anchors_l{i}"] = a
        s = c[0].sigmoid().flatten().sort(descending=True).values
        if s.numel() > model.rpn_head.test_cfg.nms_pre:
            n = model.rpn_head.test_cfg.nms_pre
            margins[f"rpn_l{i}_gap_at_nms_pre"] = float(s[n - 1] - s[n])
    proposals = model.rpn_head.simple_test_rpn(feats, metas)
    arrays["proposals"] = proposals[0]
    rois = rbbox2roi(proposals)
    extractor = model.roi_head.bbox_roi_extractor
    levels = extractor.map_roi_levels(rois, extractor.num_inputs)
    roi_feats = extractor(feats[: extractor.num_inputs], rois)
    cls_score, bbox_pred = model.roi_head.bbox_head(roi_feats)
    arrays.update(roi_cls_score=cls_score, roi_bbox_pred=bbox_pred, roi_levels=levels.long(),
                  roi_feats=roi_feats)
    return arrays, margins


@torch.no_grad()
def detections(model, image: torch.Tensor, metas, arrays: Dict[str, Any]) -> Dict[str, Any]:
    """Final detections by the stepwise path, checked against ``simple_test``."""
    proposals = [torch.as_tensor(arrays["proposals"])]
    feats = model.extract_feat(image)
    cfg = model.roi_head.test_cfg
    det_bboxes, det_labels = model.roi_head.simple_test_bboxes(feats, metas, proposals, cfg, rescale=True)
    out = {"det_bboxes": det_bboxes[0], "det_labels": det_labels[0].long()}
    per_class = model.simple_test(image, metas, rescale=True)[0]
    for c, dets in enumerate(per_class):
        out[f"det_cls{c:02d}"] = dets.astype(np.float32)
        mine = det_bboxes[0][det_labels[0] == c].numpy()
        assert np.array_equal(mine, dets), "stepwise detections differ from simple_test"
    return out


def generate(
    backbone: str, out_dir: Path, scene_seed: int, stem: str
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Write ``<stem>.pth.xz``, ``<stem>_io.npz`` and ``<stem>_info.json`` into ``out_dir``;
    returns (info, state_dict)."""
    image_u8, _, _ = synthetic_scene(scene_seed, SIZE)
    image = torch.from_numpy(normalize(image_u8))[None]
    metas = img_metas(SIZE)
    model, cfg, facts = models.reduced_model(backbone, image, metas)
    arrays, margins = stages(model, image, metas)
    fg = torch.as_tensor(arrays["roi_cls_score"]).softmax(dim=1)[:, :-1]
    thr = auto_score_thr(fg)
    model.roi_head.test_cfg.score_thr = thr
    model.test_cfg.rcnn.score_thr = thr
    arrays.update(detections(model, image, metas, arrays))
    margins["rcnn_min_abs_score_minus_thr"] = float((fg - thr).abs().min())
    cfg.model.test_cfg.rcnn.score_thr = thr
    save_checkpoint_xz(out_dir / f"{stem}.pth.xz", model.state_dict(),
                       models.checkpoint_meta(cfg, f"reduced {backbone} Oriented R-CNN, random weights"))
    save_npz(out_dir / f"{stem}_io.npz", {"image_rgb_uint8": image_u8, "input": image[0], **arrays},
             whole=lambda key: key.startswith(WHOLE[backbone]))
    counts = np.bincount(np.asarray(arrays["det_labels"]), minlength=15).tolist()
    info = {
        "backbone": backbone,
        "scene_seed": scene_seed,
        "reduced": models.REDUCED,
        "recipe": facts,
        "score_thr": thr,
        "test_cfg": cfg.model.test_cfg.to_dict(),
        "n_proposals": int(len(arrays["proposals"])),
        "n_dets": int(len(arrays["det_bboxes"])),
        "classes": list(DOTA_CLASSES),
        "dets_per_class": counts,
        "roi_level_counts": np.bincount(np.asarray(arrays["roi_levels"]), minlength=4).tolist(),
        "params_total": int(sum(p.numel() for p in model.parameters())),
        "params_backbone": int(sum(p.numel() for p in model.backbone.parameters())),
        "state_dict_tensors": len(model.state_dict()),
        "margins": margins,
    }
    save_json(out_dir / f"{stem}_info.json", info)
    return info, model.state_dict()
