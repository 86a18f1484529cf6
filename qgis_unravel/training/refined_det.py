"""Refined-Det training: cross-grid label assignment (CLA), focal loss and smooth L1, both passes.

The reference (shenhaibb/Refined-Det, mmrotate 0.3.3) computes the same losses twice:
``base.*`` for pass 1 against the square anchors, ``refine.*`` for the fused pass-2 outputs
against the (detached) coarse boxes. Each pass assigns its boxes with CLA:

1. max-IoU assignment on rotated IoU: background at IoU <= 0.4, positive above 0.5, and every
   object's best box(es) positive when that IoU is above 0;
2. cross-grid step, per pyramid level holding positives: for each object matched there, the grid
   cell of its (horizontal-box) centre and the neighbouring cells on the sides the centre is
   nearer to (fraction < 0.5, as in YOLOv5) are candidates; a candidate whose grid point
   (``cell * stride``, the anchor centre) lies inside any of those objects' polygons becomes a
   positive of the object it overlaps most.

Focal loss (alpha 0.25, gamma 2) over sigmoid logits and smooth L1 (beta 0.11) on the deltas
(DeltaXYWHA, stds 1), both divided by the number of positives (at least 1 per image). Unlike the
reference, nothing here needs CUDA: the assigner allocates nothing at construction and runs on the
device of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..detector.refined_det.model import STRIDES, RefinedDet
from ..ops import obb2poly, obb2xyxy
from .losses import weighted_smooth_l1
from .targets import rotated_overlaps

FOCAL_ALPHA, FOCAL_GAMMA, SMOOTH_L1_BETA = 0.25, 2.0, 0.11
NEIGHBOUR_THR = 0.5


@dataclass(frozen=True)
class CLAConfig:
    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.4
    min_pos_iou: float = 0.0


def points_in_polygons(points: Tensor, polygons: Tensor) -> Tensor:
    """(P, G) bool: point p inside (or on the edge of) convex quadrilateral g (P, 2) / (G, 8)."""
    corners = polygons.reshape(-1, 4, 2)
    edges = corners.roll(-1, dims=1) - corners  # (G, 4, 2)
    rel = points[:, None, None, :] - corners[None]  # (P, G, 4, 2)
    cross = edges[None, ..., 0] * rel[..., 1] - edges[None, ..., 1] * rel[..., 0]
    return (cross >= 0).all(dim=-1) | (cross <= 0).all(dim=-1)


def max_iou_step(overlaps: Tensor, cfg: CLAConfig) -> Tuple[Tensor, Tensor]:
    """Steps 1-4 of the reference's CLA (its MaxIoU part): the assignment and each box's best object."""
    num_gts, num_boxes = overlaps.shape
    assigned = overlaps.new_full((num_boxes,), -1, dtype=torch.long)
    max_iou, argmax = overlaps.max(dim=0)
    assigned[(max_iou >= 0) & (max_iou <= cfg.neg_iou_thr)] = 0
    pos = max_iou > cfg.pos_iou_thr
    assigned[pos] = argmax[pos] + 1
    gt_max = overlaps.max(dim=1).values
    for i in range(num_gts):
        if gt_max[i] > cfg.min_pos_iou:
            assigned[overlaps[i] == gt_max[i]] = i + 1
    return assigned, argmax


def cross_grid_cells(
    gt_boxes: Tensor, stride: int, feat_size: Tuple[int, int], pad_shape: Tuple[int, int]
) -> Tensor:
    """Flat cell indices (on an (H, W) level) that CLA adds for these objects."""
    height, width = pad_shape
    cells_w, cells_h = width // stride, height // stride
    hbb = obb2xyxy(gt_boxes)
    centre = (hbb[:, :2] + hbb[:, 2:]) / 2
    scale = centre.new_tensor([cells_w / width, cells_h / height])
    grid = centre * scale
    far = centre.new_tensor([cells_w, cells_h]) - grid
    near_low = (grid % 1 < NEIGHBOUR_THR) & (grid > 1)  # left (x), up (y)
    near_high = (far % 1 < NEIGHBOUR_THR) & (far > 1)  # right (x), bottom (y)
    half = NEIGHBOUR_THR
    candidates = [grid]
    for axis in (0, 1):
        step = torch.zeros(2, dtype=grid.dtype, device=grid.device)
        step[axis] = half
        candidates.append((grid - step)[near_low[:, axis]])
        candidates.append((grid + step)[near_high[:, axis]])
    cells = torch.cat(candidates).long()
    feat_h, feat_w = feat_size
    cells[:, 0] = cells[:, 0].clamp(0, feat_w - 1)
    cells[:, 1] = cells[:, 1].clamp(0, feat_h - 1)
    inside = points_in_polygons(cells.to(gt_boxes.dtype) * stride, obb2poly(gt_boxes)).any(dim=1)
    cells = cells[inside]
    return cells[:, 1] * feat_w + cells[:, 0]


def cla_assign(
    boxes: Tensor,
    gt_boxes: Tensor,
    level_sizes: Sequence[Tuple[int, int]],
    pad_shape: Tuple[int, int],
    strides: Sequence[int] = STRIDES,
    cfg: CLAConfig = CLAConfig(),
) -> Tensor:
    """Assignment (-1 ignore, 0 background, k+1 object k) of the level-concatenated ``boxes``."""
    num_boxes = boxes.shape[0]
    if gt_boxes.shape[0] == 0:
        return boxes.new_zeros((num_boxes,), dtype=torch.long)
    overlaps = rotated_overlaps(gt_boxes, boxes)
    assigned, argmax = max_iou_step(overlaps, cfg)
    positive = assigned > 0
    extra = torch.zeros(num_boxes, dtype=torch.bool, device=boxes.device)
    start = 0
    for size, stride in zip(level_sizes, strides):
        count = size[0] * size[1]
        level_pos = positive[start : start + count]
        if level_pos.any():
            objects = argmax[start : start + count][level_pos].unique()
            cells = cross_grid_cells(gt_boxes[objects, :5], stride, size, pad_shape)
            extra[start + cells] = True
        start += count
    assigned[extra] = argmax[extra] + 1
    return assigned


def focal_loss(logits: Tensor, labels: Tensor, weights: Tensor, avg_factor: float) -> Tensor:
    """mmdet's sigmoid focal loss: ``labels`` == num_classes is background (all-zero target)."""
    num_classes = logits.shape[1]
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits.dtype)
    prob = logits.sigmoid()
    pt = (1 - prob) * target + prob * (1 - target)
    focal = (FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)) * pt.pow(FOCAL_GAMMA)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal
    return (loss * weights[:, None]).sum() / avg_factor


def pass_losses(
    model: RefinedDet,
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    boxes: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    pad_shape: Tuple[int, int],
) -> Dict[str, Tensor]:
    """Focal + smooth-L1 losses of one pass; ``boxes[i]`` (N, 5) are image i's priors, levels concatenated."""
    num_classes = model.bbox_head.num_classes
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    batch = cls_scores[0].shape[0]
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1, num_classes) for c in cls_scores], dim=1)
    deltas = torch.cat([r.permute(0, 2, 3, 1).reshape(batch, -1, 5) for r in bbox_preds], dim=1)
    all_labels, all_weights, pos_deltas, pos_targets = [], [], [], []
    num_pos = 0
    for i in range(batch):
        priors = boxes[i].detach()
        gts = gt_boxes[i][:, :5].to(priors.dtype)
        assigned = cla_assign(priors, gts, sizes, pad_shape)
        pos = torch.nonzero(assigned > 0).flatten()
        labels = assigned.new_full(assigned.shape, num_classes)
        labels[pos] = gt_labels[i][assigned[pos] - 1].long()
        all_labels.append(labels)
        all_weights.append((assigned >= 0).to(logits.dtype))
        pos_deltas.append(deltas[i][pos])
        pos_targets.append(model.bbox_coder.encode(priors[pos], gts[assigned[pos] - 1]))
        num_pos += max(int(pos.numel()), 1)
    loss_cls = focal_loss(
        logits.reshape(-1, num_classes), torch.cat(all_labels), torch.cat(all_weights), num_pos
    )
    pred, target = torch.cat(pos_deltas), torch.cat(pos_targets).to(deltas.dtype)
    loss_bbox = weighted_smooth_l1(pred, target, torch.ones_like(target), SMOOTH_L1_BETA, num_pos)
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}


def refined_det_losses(
    model: RefinedDet, batch: Tensor, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor]
) -> Dict[str, Tensor]:
    """``base.*`` (pass 1 on the anchors) and ``refine.*`` (fused pass 2 on the coarse boxes)."""
    feats = model.extract_feat(batch)
    out = model.head_outputs(feats)
    pad_shape = tuple(batch.shape[-2:])
    batch_size = batch.shape[0]
    anchors = torch.cat(model.anchors(feats))
    priors = [anchors] * batch_size
    rois = torch.cat([r.detach() for r in out["rois"]], dim=1)
    losses: Dict[str, Tensor] = {}
    base = pass_losses(model, out["coarse_cls"], out["coarse_reg"], priors, gt_boxes, gt_labels, pad_shape)
    refine = pass_losses(
        model, out["cls_score"], out["bbox_pred"], list(rois), gt_boxes, gt_labels, pad_shape
    )
    for prefix, part in (("base", base), ("refine", refine)):
        for key, value in part.items():
            losses[f"{prefix}.{key}"] = value
    return losses


def loss_keys(losses: Dict[str, Tensor]) -> List[str]:
    return [k for k in losses if "loss" in k]
