"""Average precision from a precision-recall curve, in the two modes mmdet/mmrotate offer.

``"11points"`` is the VOC2007 metric that mmrotate's DOTA evaluation uses by default
(``use_07_metric=True``); ``"area"`` is the exact area under the monotone PR envelope.
"""

from __future__ import annotations

import numpy as np

MODES = ("11points", "area")


def average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str = "11points") -> float:
    """AP of one class; ``recalls``/``precisions`` are cumulative, in descending-score order."""
    recalls = np.asarray(recalls, dtype=np.float64).reshape(-1)
    precisions = np.asarray(precisions, dtype=np.float64).reshape(-1)
    if recalls.shape != precisions.shape:
        raise ValueError(f"recalls {recalls.shape} and precisions {precisions.shape} differ in shape")
    if mode == "11points":
        return _eleven_points(recalls, precisions)
    if mode == "area":
        return _area(recalls, precisions)
    raise ValueError(f"unknown AP mode {mode!r}; use one of {', '.join(MODES)}")


def _eleven_points(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """Mean over recall levels 0, 0.1, ..., 1 of the best precision at or beyond that recall."""
    total = 0.0
    for level in np.arange(0.0, 1.0 + 1e-3, 0.1):
        reached = precisions[recalls >= level]
        total += reached.max() if reached.size else 0.0
    return total / 11.0


def _area(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """Area under the precision envelope (precision made non-increasing in recall)."""
    mrec = np.concatenate([[0.0], recalls, [1.0]])
    mpre = np.concatenate([[0.0], precisions, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
