"""From oriented pixel boxes to map polygons and real-world sizes.

The four corners of each box go through the raster's full affine (rotation and shear
included), so the polygon is exact in the raster's CRS. Sizes and areas are geodesic on
the CRS's ellipsoid, which is right for geographic CRSs and for projections whose scale
varies (Web Mercator) alike.

Where features go when the raster lacks part of its georeferencing follows one rule, the one
QGIS 3.22 uses to show such a raster, so results always land on the image in any project CRS:

- the geotransform is the raster's own when it has one, else pixel coordinates with y negated
  (QGIS's GDAL provider falls back to (0, 1, 0, 0, 0, -1) instead of GDAL's y-down default);
- the CRS is the raster's own when it has one, else none: QGIS gives such a raster an invalid
  CRS and draws it untransformed in the project's coordinates, and a vector layer without a
  CRS is drawn the same way (the GeoPackage writer uses srs_id -1, "undefined Cartesian";
  srs_id 0 would be an undefined *geographic* CRS, which QGIS reprojects far away);
- real-world sizes need both; otherwise they are left empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from rasterio.transform import Affine

from .projdata import ensure_proj_data

# QGIS's geotransform for a raster without one: pixel (col, row) -> (col, -row).
UNGEOREFERENCED_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


@dataclass(frozen=True)
class Placement:
    """Where a raster's features go: the affine and CRS to use, and what the raster lacked."""

    transform: Affine
    crs_wkt: Optional[str]
    has_transform: bool
    has_crs: bool

    @property
    def georeferenced(self) -> bool:
        """Both a geotransform and a CRS: map coordinates and real-world sizes."""
        return self.has_transform and self.has_crs

    def note(self, name: str) -> Optional[str]:
        """The warning for a raster that lacks part of its georeferencing (None when complete)."""
        if self.georeferenced:
            return None
        if self.has_transform:
            return (f"{name} has a geotransform but no CRS: features use its coordinates and have no "
                    "CRS either, so QGIS draws them on the image; sizes are left empty")
        if self.has_crs:
            return (f"{name} has a CRS but no geotransform: features are in pixel coordinates "
                    "(y up), where QGIS shows the image; sizes are left empty")
        return (f"{name} has no georeferencing: features are in pixel coordinates (y up) without a "
                "CRS, where QGIS shows the image in any project CRS; sizes are left empty")


def placement(transform: Optional[Affine], crs_wkt: Optional[str]) -> Placement:
    """The one rule for placing features of a raster with or without transform and CRS.

    ``transform`` is None (or the identity GDAL reports for "none") when the raster has no
    geotransform; ``crs_wkt`` is None when it has no CRS.
    """
    has_transform = transform is not None and not transform.is_identity
    return Placement(transform if has_transform else UNGEOREFERENCED_TRANSFORM, crs_wkt or None,
                     has_transform, bool(crs_wkt))


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 5) cx, cy, w, h, a -> (N, 4, 2) corners in the order of mmrotate's obb2poly.

    Corner 0 -> 1 runs along ``w``, corner 1 -> 2 along ``h``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    cx, cy, w, h, a = boxes.T
    cos, sin = np.cos(a), np.sin(a)
    local = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    dx = local[None, :, 0] * w[:, None]
    dy = local[None, :, 1] * h[:, None]
    x = cx[:, None] + cos[:, None] * dx - sin[:, None] * dy
    y = cy[:, None] + sin[:, None] * dx + cos[:, None] * dy
    return np.stack([x, y], axis=-1)


def apply_affine(transform: Affine, xy: np.ndarray) -> np.ndarray:
    """Pixel (col, row) coordinates (..., 2) -> map coordinates (..., 2)."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    x, y = xy[..., 0], xy[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


@dataclass
class Measures:
    """Per-feature attributes computed from the map corners."""

    angle_deg: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    area_m2: np.ndarray


class Georeferencer:
    """Map corners and geodesic sizes for one raster's transform and CRS."""

    def __init__(self, transform: Affine, crs_wkt: Optional[str], measurable: Optional[bool] = None):
        """``measurable``: whether map units are real (default: when there is a CRS); a CRS
        with pixel coordinates (no geotransform) gives no sizes."""
        self.transform = transform
        self.crs_wkt = crs_wkt
        self.measurable = bool(crs_wkt) if measurable is None else measurable
        self._geod = None
        self._to_lonlat = None
        self._geographic = False
        if crs_wkt and self.measurable:
            self._set_up_crs(crs_wkt)

    def _set_up_crs(self, crs_wkt: str) -> None:
        ensure_proj_data()
        from pyproj import CRS, Transformer

        crs = CRS.from_wkt(crs_wkt)
        geodetic = crs.geodetic_crs
        if geodetic is None:  # an engineering CRS: planar sizes in its units only
            return
        self._geod = geodetic.get_geod()
        self._geographic = crs.is_geographic
        if not self._geographic:
            self._to_lonlat = Transformer.from_crs(crs, geodetic, always_xy=True)

    @property
    def geodesic(self) -> bool:
        return self._geod is not None

    def map_corners(self, corners_px: np.ndarray) -> np.ndarray:
        """(N, 4, 2) native pixel corners -> map corners in the raster's CRS."""
        return apply_affine(self.transform, corners_px)

    def lonlat(self, map_xy: np.ndarray) -> np.ndarray:
        """Map coordinates (..., 2) -> longitude, latitude in degrees on the CRS's datum."""
        if self._geographic:
            return map_xy
        lon, lat = self._to_lonlat.transform(map_xy[..., 0], map_xy[..., 1])
        return np.stack([np.asarray(lon), np.asarray(lat)], axis=-1)

    def measures(self, map_corners: np.ndarray) -> Measures:
        """Long-side direction and sizes of each (N, 4, 2) map polygon."""
        n = map_corners.shape[0]
        if n == 0:
            empty = np.zeros(0)
            return Measures(empty, empty, empty, empty)
        if self.geodesic:
            return self._geodesic_measures(map_corners)
        return self._planar_measures(map_corners)

    def _planar_measures(self, corners: np.ndarray) -> Measures:
        side_w = corners[:, 1] - corners[:, 0]
        side_h = corners[:, 3] - corners[:, 0]
        len_w, len_h = np.hypot(*side_w.T), np.hypot(*side_h.T)
        long_side = np.where((len_w >= len_h)[:, None], side_w, side_h)
        angle = np.degrees(np.arctan2(long_side[:, 0], long_side[:, 1])) % 180.0
        if not self.measurable:  # pixel coordinates or unknown units: no metric sizes
            nan = np.full(len(corners), np.nan)
            return Measures(angle, nan, nan, nan)
        area = np.abs(side_w[:, 0] * side_h[:, 1] - side_w[:, 1] * side_h[:, 0])
        return Measures(angle, np.maximum(len_w, len_h), np.minimum(len_w, len_h), area)

    def _geodesic_measures(self, corners: np.ndarray) -> Measures:
        ll = self.lonlat(corners)
        az01, _, d01 = self._geod.inv(ll[:, 0, 0], ll[:, 0, 1], ll[:, 1, 0], ll[:, 1, 1])
        az03, _, d03 = self._geod.inv(ll[:, 0, 0], ll[:, 0, 1], ll[:, 3, 0], ll[:, 3, 1])
        _, _, d32 = self._geod.inv(ll[:, 3, 0], ll[:, 3, 1], ll[:, 2, 0], ll[:, 2, 1])
        _, _, d12 = self._geod.inv(ll[:, 1, 0], ll[:, 1, 1], ll[:, 2, 0], ll[:, 2, 1])
        az01, az03 = np.asarray(az01), np.asarray(az03)
        len_w = (np.asarray(d01) + np.asarray(d32)) / 2
        len_h = (np.asarray(d03) + np.asarray(d12)) / 2
        # A small box on the ground is a parallelogram: area = |a| |b| sin(angle between).
        area = np.asarray(d01) * np.asarray(d03) * np.abs(np.sin(np.radians(az03 - az01)))
        w_is_long = len_w >= len_h
        if self._geographic:  # bearing against true north, which is map north here
            angle = np.where(w_is_long, az01, az03) % 180.0
        else:  # bearing against grid north of the projection
            side_w = corners[:, 1] - corners[:, 0]
            side_h = corners[:, 3] - corners[:, 0]
            long_side = np.where(w_is_long[:, None], side_w, side_h)
            angle = np.degrees(np.arctan2(long_side[:, 0], long_side[:, 1])) % 180.0
        return Measures(angle, np.maximum(len_w, len_h), np.minimum(len_w, len_h), area)

    def pixel_size_m(self, width: int, height: int) -> Optional[Tuple[float, float]]:
        """Ground size of one pixel (along columns, along rows) at the raster centre."""
        if not self.measurable:
            return None
        cx, cy = width / 2.0, height / 2.0
        px = np.array([[[cx, cy], [cx + 1, cy], [cx + 1, cy + 1], [cx, cy + 1]]])
        corners = self.map_corners(px)
        if self.geodesic:
            ll = self.lonlat(corners)
            _, _, dx = self._geod.inv(ll[0, 0, 0], ll[0, 0, 1], ll[0, 1, 0], ll[0, 1, 1])
            _, _, dy = self._geod.inv(ll[0, 0, 0], ll[0, 0, 1], ll[0, 3, 0], ll[0, 3, 1])
            return float(dx), float(dy)
        return (float(np.hypot(*(corners[0, 1] - corners[0, 0]))),
                float(np.hypot(*(corners[0, 3] - corners[0, 0]))))
