"""What the engine needs from a detector, as a typed Protocol, and the per-call settings it passes.

The engine never sets attributes on a detector: a run's thresholds and normalisation travel
with every ``predict`` call, so one cached model can serve many runs (and threads) at once.
``OrientedRCNN`` satisfies this Protocol; so do the test doubles.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..detector.config import Normalization, Thresholds
from .spec import RunSpec

__all__ = ["Detector", "Normalization", "Thresholds", "normalization_of", "thresholds_of"]


@runtime_checkable
class Detector(Protocol):
    """A network that turns RGB uint8 tiles into oriented boxes in tile pixels.

    ``predict`` returns, per image, ``{"boxes": (N, 5) le90 cx,cy,w,h,a, "scores": (N,),
    "labels": (N,) indices into ``classes``}``.
    """

    classes: Sequence[str]
    info: Mapping[str, Any]

    def predict(self, images: Sequence[np.ndarray], batch_size: int = ..., *,
                thresholds: Thresholds = ..., normalization: Normalization = ...,
                ) -> List[Dict[str, np.ndarray]]:
        ...


def thresholds_of(spec: RunSpec) -> Thresholds:
    """The detector's per-call thresholds of a resolved spec."""
    return Thresholds(score=float(spec.score_threshold), nms_iou=float(spec.nms_iou),
                      max_detections=int(spec.max_detections))


def normalization_of(spec: RunSpec) -> Normalization:
    """The detector's per-call input normalisation of a resolved spec."""
    return Normalization(mean=tuple(spec.mean), std=tuple(spec.std),
                         channel_order=str(spec.channel_order))
