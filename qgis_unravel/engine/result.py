"""The result of a detection run: map polygons plus the attributes the outputs carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

FIELD_NAMES = ("class_id", "class_name", "score", "angle_deg", "length_m", "width_m", "area_m2",
               "model", "source")


@dataclass
class RasterDetections:
    """Detections of one raster, best score first.

    ``polygons`` (N, 4, 2) are in the raster's CRS (``crs_wkt``), or in pixel coordinates
    with y pointing up when the raster is not georeferenced. ``boxes_px`` (N, 5) are the
    oriented boxes in native raster pixels (exact when no resampling was asked for).
    Sizes are NaN when they cannot be known (no georeferencing).
    """

    polygons: np.ndarray
    boxes_px: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    angle_deg: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    area_m2: np.ndarray
    classes: List[str]
    crs_wkt: Optional[str]
    model: str = ""
    source: str = ""
    partial: bool = False
    tiles_total: int = 0
    tiles_done: int = 0
    tiles_skipped: int = 0
    pixel_size_m: Optional[float] = None  # ground size of a processing pixel, when known
    warnings: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def georeferenced(self) -> bool:
        return self.crs_wkt is not None

    def class_name(self, class_id: int) -> str:
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)

    def counts(self) -> Dict[str, int]:
        """Detections per class name, in class order, classes without detections left out."""
        ids, numbers = np.unique(self.class_ids, return_counts=True)
        return {self.class_name(int(i)): int(n) for i, n in zip(ids, numbers)}

    def records(self) -> Iterator[Dict[str, Any]]:
        """One attribute dict per feature (NaN sizes as None)."""
        for i in range(len(self)):
            yield {
                "class_id": int(self.class_ids[i]),
                "class_name": self.class_name(int(self.class_ids[i])),
                "score": float(self.scores[i]),
                "angle_deg": _real(self.angle_deg[i]),
                "length_m": _real(self.length_m[i]),
                "width_m": _real(self.width_m[i]),
                "area_m2": _real(self.area_m2[i]),
                "model": self.model,
                "source": self.source,
            }

    def features(self) -> List[Dict[str, Any]]:
        """JSON-ready features: the attributes plus the closed ring of map coordinates."""
        out = []
        for record, polygon in zip(self.records(), self.polygons):
            ring = [[float(x), float(y)] for x, y in polygon]
            out.append({"ring": ring + ring[:1], **record})
        return out


def _real(value: float) -> Optional[float]:
    value = float(value)
    return None if np.isnan(value) else value
