"""DOTA Task1 (oriented boxes): the submission text files and the official evaluation.

Submission: one file ``Task1_<class>.txt`` per class, a line per detection:
``<image id> <score> x1 y1 x2 y2 x3 y3 x4 y4`` (corners with two decimals).

Evaluation follows the DOTA devkit's ``dota_evaluation_task1.py``: whole images, detections of a
class pooled over images and sorted by score, polygon IoU with the labelled quadrilaterals,
IoU 0.5, VOC07 11-point AP; objects flagged difficult (any non-zero flag) are neither counted
nor penalised when matched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..evaluate import EvalResult, ImageDetections, ImageTruth, evaluate
from .labeltxt import DotaFormatError, DotaObjects
from .merge import Detections
from .polygon import polygon_iou

PathLike = Union[str, Path]


def obb_polygons(boxes: np.ndarray) -> np.ndarray:
    """(N, 8) corners of le90 boxes (N, 5), in mmrotate's corner order."""
    import torch

    from ...ops import obb2poly

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if len(boxes) == 0:
        return np.zeros((0, 8))
    return obb2poly(torch.as_tensor(boxes, dtype=torch.float64)).numpy()


def write_submission(
    out_dir: PathLike, merged: Mapping[str, Detections], classes: Sequence[str]
) -> List[Path]:
    """``Task1_<class>.txt`` for every class (empty files too, as the server expects all)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: Dict[int, List[str]] = {i: [] for i in range(len(classes))}
    for image_id in sorted(merged):
        dets = merged[image_id]
        polys = obb_polygons(dets.boxes)
        for poly, score, label in zip(polys, dets.scores, dets.labels):
            coords = " ".join(f"{v:.2f}" for v in poly)
            lines[int(label)].append(f"{image_id} {float(score):.6f} {coords}")
    paths = []
    for i, name in enumerate(classes):
        path = out_dir / f"Task1_{name}.txt"
        tmp = path.with_suffix(".txt.partial")
        tmp.write_text("".join(line + "\n" for line in lines[i]), encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths


def read_submission(
    folder: PathLike, classes: Sequence[str]
) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{image id: (polygons (N, 8), scores (N,), labels (N,))} from ``Task1_<class>.txt`` files."""
    folder = Path(folder)
    found: Dict[str, List[Tuple[List[float], float, int]]] = {}
    for label, name in enumerate(classes):
        path = folder / f"Task1_{name}.txt"
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            items = line.split()
            if not items:
                continue
            if len(items) != 10:
                raise DotaFormatError(f"{path}, line {number}: expected id, score and 8 coordinates")
            try:
                score, coords = float(items[1]), [float(v) for v in items[2:]]
            except ValueError:
                raise DotaFormatError(f"{path}, line {number}: not numbers: {line!r}") from None
            found.setdefault(items[0], []).append((coords, score, label))
    return {
        image_id: (
            np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 8),
            np.array([r[1] for r in rows], dtype=np.float64),
            np.array([r[2] for r in rows], dtype=np.int64),
        )
        for image_id, rows in found.items()
    }


def evaluate_task1(
    detections: Mapping[str, Tuple[np.ndarray, np.ndarray, np.ndarray]],
    truth: Mapping[str, DotaObjects],
    classes: Sequence[str],
    iou_thr: float = 0.5,
    mode: str = "11points",
) -> EvalResult:
    """Per-class AP and mAP of polygon detections {image id: (polys, scores, labels)} against the
    labelled images; detections of images without labels are not scored."""
    index = {c: i for i, c in enumerate(classes)}
    dets: List[ImageDetections] = []
    truths: List[ImageTruth] = []
    for image_id in sorted(truth):
        objects = truth[image_id]
        known = np.array([n in index for n in objects.names], dtype=bool)
        labels = np.array([index[n] for n, k in zip(objects.names, known) if k], dtype=np.int64)
        truths.append(ImageTruth(objects.polys[known].reshape(-1, 8), labels, objects.difficulty[known] != 0))
        polys, scores, det_labels = detections.get(
            image_id, (np.zeros((0, 8)), np.zeros(0), np.zeros(0, dtype=np.int64))
        )
        dets.append(ImageDetections(polys, scores, det_labels))
    return evaluate(dets, truths, classes, iou_thr, mode, iou_fn=polygon_iou, box_dim=8)


def as_polygon_detections(
    merged: Mapping[str, Detections],
) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Merged oriented-box detections as the polygons a submission holds."""
    return {k: (obb_polygons(d.boxes), d.scores, d.labels) for k, d in merged.items()}


def unmatched_images(detections: Mapping[str, object], truth: Mapping[str, object]) -> Optional[List[str]]:
    """Image ids with detections but no labels (a sign of a wrong folder), or None."""
    extra = sorted(set(detections) - set(truth))
    return extra or None
