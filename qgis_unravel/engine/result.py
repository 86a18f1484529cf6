"""The result of a detection run: map polygons plus the attributes the outputs carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

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
    # (N, 4) x0, y0, width, height of the window (processing pixels) each box was kept from
    windows: Optional[np.ndarray] = None
    # one source per feature when results of several rasters are joined (else ``source``)
    sources: Optional[List[str]] = None
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
                "source": self.source if self.sources is None else self.sources[i],
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


def concatenate(results: Sequence[RasterDetections]) -> RasterDetections:
    """The features of several rasters' results as one, in the given order.

    They must share a CRS (one output layer has one) and a class list (one model).
    """
    if not results:
        raise ValueError("nothing to concatenate")
    first = results[0]

    def cat(name: str, shape: tuple) -> np.ndarray:
        parts = [np.asarray(getattr(r, name)).reshape((-1,) + shape) for r in results]
        return np.concatenate(parts)

    windows = [r.windows if r.windows is not None else np.full((len(r), 4), -1) for r in results]
    return RasterDetections(
        polygons=cat("polygons", (4, 2)), boxes_px=cat("boxes_px", (5,)), scores=cat("scores", ()),
        class_ids=cat("class_ids", ()), angle_deg=cat("angle_deg", ()), length_m=cat("length_m", ()),
        width_m=cat("width_m", ()), area_m2=cat("area_m2", ()), classes=list(first.classes),
        crs_wkt=first.crs_wkt, model=first.model, source=first.source,
        partial=any(r.partial for r in results),
        tiles_total=sum(r.tiles_total for r in results), tiles_done=sum(r.tiles_done for r in results),
        tiles_skipped=sum(r.tiles_skipped for r in results), pixel_size_m=first.pixel_size_m,
        warnings=[w for r in results for w in r.warnings],
        windows=np.concatenate([np.asarray(w, np.int64).reshape(-1, 4) for w in windows]),
        sources=[r.source if r.sources is None else r.sources[i] for r in results for i in range(len(r))],
    )
