"""DOTA-style detection accuracy: per-class AP at a rotated-IoU threshold and their mean.

Follows mmrotate's ``eval_rbbox_map``: detections of a class from all images are pooled and
sorted by score, recall is over the class's non-ignored objects, and the mAP averages the
classes that have at least one object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .ap import average_precision
from .matching import IouFn, rotated_iou, tp_fp


@dataclass
class ImageDetections:
    """One image's detections: boxes (N, 5) le90, scores (N,), labels (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class ImageTruth:
    """One image's labelled objects: boxes (N, 5), labels (N,), optional ignored flags (N,)."""

    boxes: np.ndarray
    labels: np.ndarray
    ignored: Optional[np.ndarray] = None


@dataclass
class ClassResult:
    name: str
    num_gts: int
    num_dets: int
    ap: float
    recall: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)

    @property
    def final_recall(self) -> float:
        return float(self.recall[-1]) if self.recall.size else 0.0


@dataclass
class EvalResult:
    classes: List[ClassResult]
    mean_ap: float
    iou_thr: float
    mode: str

    def as_dict(self) -> dict:
        """Plain numbers, for JSON output."""
        return {
            "mAP": self.mean_ap,
            "iou_thr": self.iou_thr,
            "mode": self.mode,
            "classes": [
                {"class": c.name, "gts": c.num_gts, "dets": c.num_dets, "recall": c.final_recall, "ap": c.ap}
                for c in self.classes
            ],
        }


def _as_dets(d: ImageDetections, label: int, box_dim: int = 5) -> np.ndarray:
    mask = np.asarray(d.labels) == label
    boxes = np.asarray(d.boxes, dtype=np.float64).reshape(-1, box_dim)[mask]
    scores = np.asarray(d.scores, dtype=np.float64).reshape(-1)[mask]
    return np.concatenate([boxes, scores[:, None]], axis=1)


def evaluate(
    detections: Sequence[ImageDetections],
    truths: Sequence[ImageTruth],
    class_names: Sequence[str],
    iou_thr: float = 0.5,
    mode: str = "11points",
    iou_fn: IouFn = rotated_iou,
    box_dim: int = 5,
) -> EvalResult:
    """Per-class AP and mAP over a set of images (detections and truths in the same order).

    ``box_dim=8`` with a polygon ``iou_fn`` compares four-corner polygons (DOTA Task1)."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection sets for {len(truths)} labelled images")
    results = []
    for label, name in enumerate(class_names):
        tps, fps, scores, num_gts = [], [], [], 0
        for det, truth in zip(detections, truths):
            dets = _as_dets(det, label, box_dim)
            mask = np.asarray(truth.labels) == label
            gts = np.asarray(truth.boxes, dtype=np.float64).reshape(-1, box_dim)[mask]
            ign = None if truth.ignored is None else np.asarray(truth.ignored, dtype=bool)[mask]
            tp, fp = tp_fp(dets, gts, iou_thr, ign, iou_fn, box_dim)
            tps.append(tp)
            fps.append(fp)
            scores.append(dets[:, box_dim])
            num_gts += int(len(gts) if ign is None else np.count_nonzero(~ign))
        results.append(
            _class_result(
                name, np.concatenate(tps), np.concatenate(fps), np.concatenate(scores), num_gts, mode
            )
        )
    aps = [r.ap for r in results if r.num_gts > 0]
    return EvalResult(results, float(np.mean(aps)) if aps else 0.0, iou_thr, mode)


def _class_result(
    name: str, tp: np.ndarray, fp: np.ndarray, scores: np.ndarray, num_gts: int, mode: str
) -> ClassResult:
    order = np.argsort(-scores, kind="stable")
    tp, fp = np.cumsum(tp[order]), np.cumsum(fp[order])
    eps = np.finfo(np.float32).eps
    recall = tp / max(num_gts, eps)
    precision = tp / np.maximum(tp + fp, eps)
    return ClassResult(
        name, num_gts, len(scores), average_precision(recall, precision, mode), recall, precision
    )


def format_table(result: EvalResult) -> str:
    """A fixed-width per-class table (class, gts, dets, recall, AP) with the mAP last."""
    width = max([len("class"), len("mAP")] + [len(c.name) for c in result.classes])
    lines = [f"{'class':<{width}}  {'gts':>6}  {'dets':>6}  {'recall':>6}  {'AP':>6}"]
    lines.append("-" * len(lines[0]))
    for c in result.classes:
        lines.append(
            f"{c.name:<{width}}  {c.num_gts:>6d}  {c.num_dets:>6d}  {c.final_recall:>6.3f}  {c.ap:>6.3f}"
        )
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mAP':<{width}}  {'':>6}  {'':>6}  {'':>6}  {result.mean_ap:>6.3f}")
    lines.append(f"(rotated IoU >= {result.iou_thr:g}, AP mode {result.mode})")
    return "\n".join(lines)
