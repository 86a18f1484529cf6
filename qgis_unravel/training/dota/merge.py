"""Patch detections back onto whole images, as mmrotate's ``DOTADataset.merge_det`` does: each
patch's boxes are moved by the patch's offset, then per image and class a rotated NMS at IoU 0.1
removes the duplicates that overlapping patches produce.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

import numpy as np

MERGE_IOU = 0.1


@dataclass
class Detections:
    """Boxes (N, 5) le90 in pixels, scores (N,), class indices (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 5)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def shift(dets: Detections, x: float, y: float, scale: float = 1.0) -> Detections:
    """Patch detections (found on a patch resized by ``scale``) in the image's pixels."""
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 5).copy()
    boxes[:, :4] /= scale
    boxes[:, 0] += x
    boxes[:, 1] += y
    return Detections(
        boxes, np.asarray(dets.scores, dtype=np.float64), np.asarray(dets.labels, dtype=np.int64)
    )


def merge_image(parts: Iterable[Detections], iou_thr: float = MERGE_IOU) -> Detections:
    """One image's detections from its patches' (already shifted): per-class rotated NMS."""
    import torch

    from ...ops import batched_nms_rotated

    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    keep = batched_nms_rotated(
        torch.as_tensor(boxes, dtype=torch.float32),
        torch.as_tensor(scores, dtype=torch.float32),
        torch.as_tensor(labels),
        iou_thr,
    ).numpy()
    return Detections(boxes[keep], scores[keep], labels[keep])


def merge_patches(
    patch_dets: Iterable[Tuple[str, int, int, Detections]], iou_thr: float = MERGE_IOU
) -> Dict[str, Detections]:
    """{image id: merged detections} from (image id, x, y, patch detections) records."""
    collected: Dict[str, list] = defaultdict(list)
    for image_id, x, y, dets in patch_dets:
        collected[image_id].append(shift(dets, x, y))
    return {image_id: merge_image(parts, iou_thr) for image_id, parts in collected.items()}
