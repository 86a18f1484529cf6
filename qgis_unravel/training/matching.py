"""Marking one image's detections of one class as true or false positives (mmrotate's rule).

Detections are visited by descending score; each is matched to the ground truth it overlaps
most (rotated IoU). A match at or above the threshold to a still-uncovered object is a true
positive; a match to an already-covered object, or a best IoU below the threshold, is a false
positive. Ground truth marked as ignored (difficult) neither counts nor penalises.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

IouFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def rotated_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, M) rotated IoU of le90 boxes with the project's op."""
    import torch

    from ..ops import box_iou_rotated

    if len(boxes1) == 0 or len(boxes2) == 0:
        return np.zeros((len(boxes1), len(boxes2)), dtype=np.float64)
    ious = box_iou_rotated(
        torch.as_tensor(boxes1[:, :5], dtype=torch.float32),
        torch.as_tensor(boxes2[:, :5], dtype=torch.float32),
    )
    return ious.numpy().astype(np.float64)


def tp_fp(
    dets: np.ndarray,
    gts: np.ndarray,
    iou_thr: float = 0.5,
    ignored: Optional[np.ndarray] = None,
    iou_fn: IouFn = rotated_iou,
    box_dim: int = 5,
) -> Tuple[np.ndarray, np.ndarray]:
    """``dets`` (M, D+1) boxes + score, ``gts`` (N, D) -> tp, fp flags (M,) in the rows' order.

    Boxes are (cx, cy, w, h, a) (D = 5) or, with ``box_dim=8`` and a polygon ``iou_fn``,
    four-corner polygons as DOTA's Task1 evaluation compares them.
    """
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, box_dim + 1)
    gts = np.asarray(gts, dtype=np.float64).reshape(-1, box_dim)
    ignored = np.zeros(len(gts), dtype=bool) if ignored is None else np.asarray(ignored, dtype=bool)
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    if len(gts) == 0:
        fp[:] = 1.0
        return tp, fp
    if len(dets) == 0:
        return tp, fp
    ious = iou_fn(dets[:, :box_dim], gts)
    best = ious.max(axis=1)
    best_gt = ious.argmax(axis=1)
    covered = np.zeros(len(gts), dtype=bool)
    for i in np.argsort(-dets[:, box_dim], kind="stable"):
        if best[i] < iou_thr:
            fp[i] = 1.0
            continue
        g = best_gt[i]
        if ignored[g]:
            continue
        if covered[g]:
            fp[i] = 1.0
        else:
            covered[g] = True
            tp[i] = 1.0
    return tp, fp
