"""Training targets and losses of both stages, as mmrotate's Oriented R-CNN computes them.

RPN: anchors fully inside the image are matched to the *horizontal* boxes of the objects
(MaxIoU 0.7/0.3, low-quality matches at 0.3), 256 sampled per image (half positive), targets
from the MidpointOffsetCoder against the oriented boxes; sigmoid BCE + smooth L1 (beta 1/9),
both divided by the number of sampled anchors.

R-CNN: the objects are added to the proposals, which are matched by rotated IoU (0.5), 512
sampled per image (a quarter positive); softmax CE over C+1 classes (background last) and
smooth L1 (beta 1) on the positives' DeltaXYWHA targets, both divided by the sampled count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..ops import box_iou_rotated, obb2xyxy
from .assign import RCNN_ASSIGNER, RPN_ASSIGNER, max_iou_assign, random_sample
from .losses import weighted_bce, weighted_ce, weighted_smooth_l1

RPN_SAMPLES, RPN_POS_FRACTION, RPN_BETA = 256, 0.5, 1.0 / 9.0
RCNN_SAMPLES, RCNN_POS_FRACTION, RCNN_BETA = 512, 0.25, 1.0


Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def per_image(generator: Generators, i: int) -> Optional[torch.Generator]:
    """Image ``i``'s generator from one shared generator or a list of one per image."""
    if isinstance(generator, (list, tuple)):
        return generator[i]
    return generator


def box_iou_xyxy(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(N, M) IoU of horizontal boxes, mmdet's convention (no +1 on sizes)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area1[:, None] + area2[None, :] - inter).clamp(min=torch.finfo(torch.float32).eps)
    return inter / union


def rotated_overlaps(gts: Tensor, boxes: Tensor) -> Tensor:
    """mmrotate's RBboxOverlaps2D: rotated IoU with sides clamped to at least 1e-3."""
    g = gts[:, :5].detach().clone()
    b = boxes[:, :5].detach().clone()
    g[:, 2:4] = g[:, 2:4].clamp(min=1e-3)
    b[:, 2:4] = b[:, 2:4].clamp(min=1e-3)
    if g.shape[0] == 0 or b.shape[0] == 0:
        return g.new_zeros((g.shape[0], b.shape[0]))
    return box_iou_rotated(g, b)


def inside_image(anchors: Tensor, height: int, width: int) -> Tensor:
    """Anchors lying wholly inside the unpadded image (allowed_border = 0)."""
    return (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < width) & (anchors[:, 3] < height)


@dataclass
class RPNTargets:
    labels: Tensor  # (A,) 1 object / 0 background
    label_weights: Tensor  # (A,)
    bbox_targets: Tensor  # (A, 6)
    bbox_weights: Tensor  # (A, 6)
    num_samples: int


def rpn_targets_single(
    anchors: Tensor,
    gt_boxes: Tensor,
    image_size: Tuple[int, int],
    coder,
    generator: Optional[torch.Generator] = None,
) -> RPNTargets:
    """Targets for one image's anchors (all levels concatenated, (A, 4) xyxy)."""
    num = anchors.shape[0]
    labels = anchors.new_zeros(num)
    label_weights = anchors.new_zeros(num)
    bbox_targets = anchors.new_zeros((num, 6))
    bbox_weights = anchors.new_zeros((num, 6))
    inside = torch.nonzero(inside_image(anchors, *image_size)).flatten()
    valid = anchors[inside]
    overlaps = (
        box_iou_xyxy(obb2xyxy(gt_boxes), valid) if gt_boxes.shape[0] else valid.new_zeros((0, len(valid)))
    )
    assigned = max_iou_assign(overlaps, RPN_ASSIGNER)
    pos, neg = random_sample(assigned, RPN_SAMPLES, RPN_POS_FRACTION, generator)
    if pos.numel():
        pos_anchor = inside[pos]
        labels[pos_anchor] = 1.0
        label_weights[pos_anchor] = 1.0
        bbox_targets[pos_anchor] = coder.encode(valid[pos], gt_boxes[assigned[pos] - 1])
        bbox_weights[pos_anchor] = 1.0
    label_weights[inside[neg]] = 1.0
    return RPNTargets(labels, label_weights, bbox_targets, bbox_weights, int(pos.numel() + neg.numel()))


def flatten_rpn_outputs(
    cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], index: int
) -> Tuple[Tensor, Tensor]:
    """One image's logits (A,) and deltas (A, 6) in the anchors' (level, y, x, k) order."""
    logits = torch.cat([c[index].permute(1, 2, 0).reshape(-1) for c in cls_scores])
    deltas = torch.cat([b[index].permute(1, 2, 0).reshape(-1, 6) for b in bbox_preds])
    return logits, deltas


def rpn_loss(
    rpn_head,
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    generator: Generators = None,
) -> Dict[str, Tensor]:
    """loss_rpn_cls and loss_rpn_bbox of a batch, averaged over all sampled anchors of the batch.

    ``generator`` is one generator for the batch or one per image (then an image's sampling does
    not depend on the other images of its batch, which distributed training relies on)."""
    anchors = torch.cat(rpn_head.anchors(cls_scores))
    logits, deltas, targets = [], [], []
    for i, (gts, size) in enumerate(zip(gt_boxes, image_sizes)):
        lg, dl = flatten_rpn_outputs(cls_scores, bbox_preds, i)
        logits.append(lg)
        deltas.append(dl)
        gen = per_image(generator, i)
        targets.append(rpn_targets_single(anchors, gts.to(anchors), size, rpn_head.bbox_coder, gen))
    total = sum(t.num_samples for t in targets)
    logits_all = torch.cat(logits).float()
    deltas_all = torch.cat(deltas).float()
    loss_cls = weighted_bce(
        logits_all,
        torch.cat([t.labels for t in targets]),
        torch.cat([t.label_weights for t in targets]),
        total,
    )
    loss_bbox = weighted_smooth_l1(
        deltas_all,
        torch.cat([t.bbox_targets for t in targets]),
        torch.cat([t.bbox_weights for t in targets]),
        RPN_BETA,
        total,
    )
    return {"loss_rpn_cls": loss_cls, "loss_rpn_bbox": loss_bbox}


@dataclass
class RoISamples:
    rois: Tensor  # (K, 6) [image index, cx, cy, w, h, a], positives first per image
    labels: Tensor  # (K,) class index, num_classes = background
    bbox_targets: Tensor  # (K, 5)
    num_pos: int


def sample_rois_single(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    num_classes: int,
    coder,
    image_index: int,
    generator: Optional[torch.Generator] = None,
) -> RoISamples:
    """Objects added as proposals, rotated-IoU assignment, 512 samples (a quarter positive)."""
    boxes = torch.cat([gt_boxes[:, :5], proposals[:, :5].detach()], dim=0)
    assigned = max_iou_assign(rotated_overlaps(gt_boxes, proposals), RCNN_ASSIGNER)
    gt_inds = torch.arange(1, gt_boxes.shape[0] + 1, device=boxes.device, dtype=torch.long)
    assigned = torch.cat([gt_inds, assigned])
    pos, neg = random_sample(assigned, RCNN_SAMPLES, RCNN_POS_FRACTION, generator)
    chosen = torch.cat([pos, neg])
    matched = assigned[pos] - 1
    labels = torch.full((chosen.numel(),), num_classes, dtype=torch.long, device=boxes.device)
    labels[: pos.numel()] = gt_labels[matched]
    bbox_targets = boxes.new_zeros((chosen.numel(), 5))
    if pos.numel():
        bbox_targets[: pos.numel()] = coder.encode(boxes[pos], gt_boxes[matched, :5])
    ids = boxes.new_full((chosen.numel(), 1), float(image_index))
    return RoISamples(torch.cat([ids, boxes[chosen]], dim=1), labels, bbox_targets, int(pos.numel()))


def sample_rois(
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    num_classes: int,
    coder,
    generator: Generators = None,
) -> List[RoISamples]:
    return [
        sample_rois_single(p, g.to(p), lab.to(p.device), num_classes, coder, i, per_image(generator, i))
        for i, (p, g, lab) in enumerate(zip(proposals, gt_boxes, gt_labels))
    ]


def rcnn_loss(
    cls_score: Tensor, bbox_pred: Tensor, samples: Sequence[RoISamples], num_classes: int
) -> Dict[str, Tensor]:
    """loss_cls (CE) and loss_bbox (smooth L1 on positives), both over all sampled RoIs."""
    labels = torch.cat([s.labels for s in samples])
    targets = torch.cat([s.bbox_targets for s in samples])
    total = float(labels.numel())
    cls_score, bbox_pred = cls_score.float(), bbox_pred.float()
    loss_cls = weighted_ce(cls_score, labels, torch.ones_like(labels, dtype=cls_score.dtype), total)
    pos = labels < num_classes
    if pos.any():
        loss_bbox = weighted_smooth_l1(
            bbox_pred[pos], targets[pos], torch.ones_like(targets[pos]), RCNN_BETA, total
        )
    else:
        loss_bbox = bbox_pred[pos].sum()
    accuracy = (
        (cls_score.argmax(dim=1) == labels).float().mean() * 100
        if labels.numel()
        else cls_score.new_zeros(())
    )
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "acc": accuracy.detach()}
