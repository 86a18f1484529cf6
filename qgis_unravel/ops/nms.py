"""Rotated and horizontal NMS with mmcv 1.7.2 / mmrotate 0.3.4 semantics, fast on CPU and CUDA.

mmcv's CPU rotated NMS tests every (kept, later) pair with an exact polygon IoU, which is
quadratic in practice. Here the greedy walk (``greedy.greedy_keep``) first rejects pairs whose
bounding boxes do not touch, and, for rotated boxes, pairs whose IoU cannot reach the threshold
by a cheap upper bound; only the rest get the exact IoU. The kept set is the same.

``grouped_nms_rotated`` is the same greedy rule per group without moving any box, so raster-wide
float64 coordinates keep their precision (the engine's cross-tile merge uses it).

Horizontal NMS (the RPN's ``batched_nms``) splits the boxes into groups that cannot interact
(mmcv's shifted levels, whose overall bounds do not overlap). On CPU it walks each with a dense,
block-wise IoU > thr matrix (``_dense_keep``); on accelerators, ``greedy_keep`` takes every pair
at once (see ``greedy``). Both compute the same float operations, so the same keep list.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from . import greedy
from .boxes import obb_half_extents
from .greedy import greedy_keep
from .iou_rotated import rotated_pair_iou

__all__ = [
    "batched_nms",
    "batched_nms_rotated",
    "grouped_nms_rotated",
    "multiclass_nms_rotated",
    "nms",
    "nms_rotated",
]

_MIN_AREA = 1e-14


def _check(boxes: Tensor, scores: Tensor, width: int, what: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != width:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must have shape (N, {width}) as {what}, got {shape}")
    if not isinstance(scores, Tensor) or scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {shape}")


def _check_idxs(idxs: Tensor, n: int, name: str) -> None:
    if not isinstance(idxs, Tensor) or idxs.dim() != 1 or idxs.shape[0] != n:
        shape = tuple(idxs.shape) if isinstance(idxs, Tensor) else type(idxs).__name__
        raise ValueError(f"{name} must have shape ({n},), got {shape}")


def _score_order(scores: Tensor) -> Tensor:
    """Ranks by descending score; ties keep input order (stable)."""
    return torch.sort(scores, descending=True, stable=True)[1]


def _rotated_aabb(boxes: Tensor) -> Tensor:
    """Slightly padded axis-aligned bounds, so rounding never hides a real overlap."""
    half_x, half_y = obb_half_extents(boxes)
    pad = 1e-5 * (half_x + half_y) + 1e-6 * (boxes[:, 0].abs() + boxes[:, 1].abs()) + 1e-6
    half_x, half_y = half_x + pad, half_y + pad
    cx, cy = boxes[:, 0], boxes[:, 1]
    return torch.stack([cx - half_x, cy - half_y, cx + half_x, cy + half_y], dim=-1)


def _rotated_test(boxes: Tensor, aabb: Tensor, iou_threshold: float):
    """Pair test for rotated NMS: mmcv's CPU kernel suppresses when IoU >= threshold."""
    area = boxes[:, 2] * boxes[:, 3]

    def suppresses(i: Tensor, j: Tensor) -> Tensor:
        # Upper bound: intersection <= smaller area and <= overlap of the bounding boxes.
        ox = (torch.minimum(aabb[i, 2], aabb[j, 2]) - torch.maximum(aabb[i, 0], aabb[j, 0])).clamp(min=0)
        oy = (torch.minimum(aabb[i, 3], aabb[j, 3]) - torch.maximum(aabb[i, 1], aabb[j, 1])).clamp(min=0)
        a_i, a_j = area[i], area[j]
        inter_max = torch.minimum(torch.minimum(a_i, a_j), ox * oy)
        bound = inter_max / (a_i + a_j - inter_max).clamp(min=_MIN_AREA)
        maybe = (bound * (1 + 1e-4) >= iou_threshold) & (a_i >= _MIN_AREA) & (a_j >= _MIN_AREA)
        out = torch.zeros_like(maybe)
        idx = torch.nonzero(maybe, as_tuple=True)[0]
        if idx.numel():
            out[idx] = rotated_pair_iou(boxes[i[idx]], boxes[j[idx]]) >= iou_threshold
        return out

    return suppresses


def _same_group(groups: Tensor | None, test):
    if groups is None:
        return test

    def suppresses(i: Tensor, j: Tensor) -> Tensor:
        return test(i, j) & (groups[i] == groups[j])

    return suppresses


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of rotated boxes, as ``mmcv.ops.nms_rotated(boxes, scores, thr)[1]`` (CPU kernel).

    Boxes are visited by descending score (ties: lower index first); a box is dropped when its
    rotated IoU with an already kept box is ``>= iou_threshold`` (mmcv's CPU comparison; its CUDA
    kernel uses ``>``, which differs only for IoUs exactly at the threshold). With a threshold
    ``<= 0`` every pair qualifies, so only the best box survives.

    Args:
        boxes: ``(N, 5)`` as ``(cx, cy, w, h, a)``, y down, clockwise-positive angle in radians.
        scores: ``(N,)``.
        iou_threshold: IoU at or above which the lower-scored box is suppressed.

    Returns:
        int64 indices into ``boxes`` of the kept boxes, by descending score.
    """
    _check(boxes, scores, 5, "(cx, cy, w, h, a)")
    return _nms_rotated(boxes, scores, float(iou_threshold), None)


def _nms_rotated(boxes: Tensor, scores: Tensor, thr: float, groups: Tensor | None,
                 frame: tuple[float, float, float, float] | None = None) -> Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = _score_order(scores)
    if thr <= 0 and groups is None:
        return order[:1]
    dtype = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    sorted_boxes = boxes[order].to(dtype)
    aabb = _rotated_aabb(sorted_boxes)
    test = _rotated_test(sorted_boxes, aabb, thr)
    sorted_groups = None if groups is None else groups[order]
    if thr <= 0:
        aabb = _whole_plane(aabb)
    keep = greedy_keep(aabb, _same_group(sorted_groups, test), frame=frame)
    return order[keep]


def _whole_plane(aabb: Tensor) -> Tensor:
    """Bounds that all touch, for thresholds where even disjoint boxes suppress each other."""
    big = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=aabb.dtype, device=aabb.device)
    return big.expand_as(aabb).clone()


def batched_nms_rotated(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Per-class rotated NMS, identical to mmrotate 0.3.4's ``multiclass_nms_rotated`` trick.

    mmrotate shifts each box centre by ``label * (max(cx, cy) + max(w, h) + 1)`` so that classes
    cannot overlap, then runs one ``nms_rotated``. The same shift is applied here (same float
    rounding), so the kept set is the reference's even in corner cases.

    Returns:
        int64 indices into ``boxes``, by descending score across all classes.
    """
    _check(boxes, scores, 5, "(cx, cy, w, h, a)")
    _check_idxs(labels, boxes.shape[0], "labels")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    max_coordinate = boxes[:, :2].max() + boxes[:, 2:4].max()
    offsets = labels.to(boxes) * (max_coordinate + 1)
    shifted = boxes.clone()
    shifted[:, :2] = shifted[:, :2] + offsets[:, None]
    return _nms_rotated(shifted, scores, float(iou_threshold), None)


def multiclass_nms_rotated(
    boxes: Tensor, scores: Tensor, score_thr: float, iou_threshold: float, max_num: int = -1
) -> Tuple[Tensor, Tensor, Tensor]:
    """mmrotate 0.3.4's ``multiclass_nms_rotated`` for class-agnostic boxes.

    Every (box, class) pair whose foreground score ``scores`` (N, C) is above ``score_thr``
    becomes a candidate (rows box-major, as mmrotate flattens them), then per-class rotated NMS,
    then the first ``max_num`` (all when ``max_num <= 0``).

    Returns:
        boxes (K, 5), scores (K,), labels (K,) by descending score.
    """
    box_idx, labels = torch.nonzero(scores > score_thr, as_tuple=True)
    cand_scores = scores[box_idx, labels]
    cand_boxes = boxes[box_idx]
    if cand_boxes.shape[0] == 0:
        return cand_boxes, cand_scores, labels
    keep = batched_nms_rotated(cand_boxes, cand_scores, labels, iou_threshold)
    if max_num > 0:
        keep = keep[:max_num]
    return cand_boxes[keep], cand_scores[keep], labels[keep]


def grouped_nms_rotated(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float,
                        frame: tuple[float, float, float, float] | None = None) -> Tensor:
    """Rotated NMS within each group (class), boxes left where they are.

    The rule is ``nms_rotated``'s (descending score, ties by index, suppressed at IoU
    ``>= iou_threshold``); unlike ``batched_nms_rotated`` no group is shifted away, so float64
    boxes anywhere on a large raster are compared at full precision. Only pairs whose bounds
    meet are ever tested (the grid index of ``greedy_keep``), so the cost follows the number of
    neighbours, not the square of the number of boxes. ``frame`` (x1, y1, x2, y2), met by every
    box (e.g. the raster), bounds the pair search's memory for absurdly large boxes
    (``spatial.GridIndex``); the result is the same.

    Returns:
        int64 indices into ``boxes`` of the kept boxes, by descending score.
    """
    _check(boxes, scores, 5, "(cx, cy, w, h, a)")
    _check_idxs(groups, boxes.shape[0], "groups")
    return _nms_rotated(boxes, scores, float(iou_threshold), groups, frame)


def _horizontal_test(boxes: Tensor, iou_threshold: float):
    """Pair test for horizontal NMS: mmcv's kernel (offset 0) suppresses when IoU > threshold."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def suppresses(i: Tensor, j: Tensor) -> Tensor:
        bi, bj = boxes[i], boxes[j]
        w = (torch.minimum(bi[:, 2], bj[:, 2]) - torch.maximum(bi[:, 0], bj[:, 0])).clamp(min=0)
        h = (torch.minimum(bi[:, 3], bj[:, 3]) - torch.maximum(bi[:, 1], bj[:, 1])).clamp(min=0)
        inter = w * h
        return inter / (area[i] + area[j] - inter) > iou_threshold

    return suppresses


def _nms_horizontal(
    boxes: Tensor, scores: Tensor, thr: float, groups: Tensor | None, hint: Tensor | None = None
) -> Tensor:
    """Greedy horizontal NMS; ``groups`` never interact, ``hint`` labels boxes whose groups may
    interact only if their bounds overlap (mmcv's shifted boxes below 10000)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = _score_order(scores)
    sorted_boxes = boxes[order]
    aabb = sorted_boxes
    if thr < 0:
        if groups is None:
            return order[:1]
        aabb = _whole_plane(aabb)
        test = _horizontal_test(sorted_boxes, thr)
        keep = greedy_keep(aabb, _same_group(groups[order], test))
        return order[keep]
    if groups is not None:
        parts = _split_groups(groups[order], None)
    elif hint is not None:
        parts = _split_groups(hint[order], sorted_boxes)
    else:
        parts = [None]
    keeps = []
    for ranks in parts:
        part = sorted_boxes if ranks is None else sorted_boxes[ranks]
        if part.shape[0] <= _DENSE_MAX and not greedy.prefers_dense(part.device, part.shape[0]):
            kept = _dense_keep(part, thr)
        else:
            kept = greedy_keep(part, _horizontal_test(part, thr))
        keeps.append(kept if ranks is None else ranks[kept])
    keep = keeps[0] if len(keeps) == 1 else torch.cat(keeps).sort()[0]
    return order[keep]


# Parts up to this many boxes take the dense path (rows of an IoU > thr matrix, computed in
# blocks of ``_DENSE_BLOCK`` ranks for the boxes still alive); larger ones the grid-indexed walk.
_DENSE_MAX = 12000
_DENSE_BLOCK = 128
# More groups than this are not split into independent parts (the pairwise test is quadratic).
_MAX_SPLIT_GROUPS = 256


def _split_groups(labels: Tensor, boxes: Tensor | None) -> list:
    """Ascending rank tensors of independent parts: one per group, or, when ``boxes`` is given,
    per set of groups whose overall bounds overlap with a positive area (boxes of groups whose
    bounds only touch or are apart have zero intersection, so IoU 0 or NaN, never > thr >= 0).
    Non-finite bounds count as overlapping everything."""
    values, inverse = torch.unique(labels, return_inverse=True)
    count = values.numel()
    if count == 1 or count > _MAX_SPLIT_GROUPS:
        return [None]
    comp = list(range(count))
    if boxes is not None:
        big = float("inf")
        slot = inverse[:, None].expand(-1, 2)
        lo = boxes.new_full((count, 2), big).scatter_reduce(0, slot, boxes[:, :2], "amin")
        hi = boxes.new_full((count, 2), -big).scatter_reduce(0, slot, boxes[:, 2:], "amax")
        bad = torch.zeros(count, dtype=torch.bool, device=boxes.device)
        bad[inverse[~torch.isfinite(boxes).all(1)]] = True
        lo = torch.where(bad[:, None], -big, lo)
        hi = torch.where(bad[:, None], big, hi)
        over = torch.minimum(hi[:, None], hi[None]) - torch.maximum(lo[:, None], lo[None])
        apart = ((over[..., 0] <= 0) | (over[..., 1] <= 0)).tolist()

        def find(a: int) -> int:
            while comp[a] != a:
                comp[a] = comp[comp[a]]
                a = comp[a]
            return a

        for a in range(count):
            for b in range(a + 1, count):
                if not apart[a][b]:
                    comp[find(a)] = find(b)
        comp = [find(a) for a in range(count)]
    roots = sorted(set(comp))
    if len(roots) == 1:
        return [None]
    comp_of = torch.tensor(comp, device=labels.device)[inverse]
    order = torch.sort(comp_of, stable=True)[1]
    sizes = torch.bincount(comp_of, minlength=count)[roots].tolist()
    return list(torch.split(order, sizes))


def _dense_keep(boxes: Tensor, thr: float) -> Tensor:
    """Greedy pass over rank-sorted (x1, y1, x2, y2) CPU boxes, IoU > thr suppresses (thr >= 0).

    Block by block of ranks, the IoU of the still-alive boxes with every box from the block on
    is thresholded at once with numpy (the same float operations as the pairwise test, so the
    same decisions), then the block's rows are walked in rank order. Small single-threaded
    operations stay cheap when the cores are busy (a parallel region waits for its slowest
    thread).
    """
    n = boxes.shape[0]
    x1, y1, x2, y2 = boxes.t().contiguous().numpy()
    area = (x2 - x1) * (y2 - y1)
    limit = np.asarray(thr, dtype=x1.dtype)
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for r0 in range(0, n, _DENSE_BLOCK):
        r1 = min(r0 + _DENSE_BLOCK, n)
        rows = np.flatnonzero(~removed[r0:r1]) + r0
        if rows.size == 0:
            continue
        w = np.minimum(x2[rows, None], x2[None, r0:]) - np.maximum(x1[rows, None], x1[None, r0:])
        h = np.minimum(y2[rows, None], y2[None, r0:]) - np.maximum(y1[rows, None], y1[None, r0:])
        inter = np.maximum(w, 0, out=w)
        inter *= np.maximum(h, 0, out=h)
        union = area[rows, None] + area[None, r0:]
        union -= inter
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            inter /= union
            hits = inter > limit
        tail = removed[r0:]
        for k, i in enumerate(rows.tolist()):
            if tail[i - r0]:
                continue
            keep.append(i)
            np.logical_or(tail, hits[k], out=tail)
    return torch.tensor(keep, dtype=torch.long)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of axis-aligned boxes, as ``mmcv.ops.nms(boxes, scores, thr)[1]`` (offset 0).

    Boxes ``(N, 4)`` as ``(x1, y1, x2, y2)``; areas are ``(x2 - x1) * (y2 - y1)``; a box is dropped
    when its IoU with a kept box is ``> iou_threshold``. Returns kept indices by descending score.
    """
    _check(boxes, scores, 4, "(x1, y1, x2, y2)")
    return _nms_horizontal(boxes, scores, float(iou_threshold), None)


# mmcv's batched_nms switches to one NMS per group at this many boxes.
_SPLIT_THR = 10000


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Horizontal NMS per group, as ``mmcv.ops.batched_nms(..., dict(type='nms', iou_threshold))``.

    Like mmcv, boxes are shifted by ``idx * (max coordinate + 1)`` and suppressed when IoU
    ``> iou_threshold``; from 10000 boxes on mmcv runs each group separately, so groups then never
    interact even when negative coordinates would let shifted groups overlap. Both paths are
    reproduced.

    Returns:
        int64 indices into ``boxes``, by descending score.
    """
    _check(boxes, scores, 4, "(x1, y1, x2, y2)")
    _check_idxs(idxs, boxes.shape[0], "idxs")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    shifted = boxes + offsets[:, None]
    if boxes.shape[0] >= _SPLIT_THR:
        return _nms_horizontal(shifted, scores, float(iou_threshold), idxs)
    return _nms_horizontal(shifted, scores, float(iou_threshold), None, hint=idxs)
