"""Area of interest: a bounding box in any CRS, or the polygons of a vector file.

The AOI is brought into the raster's output coordinates (its CRS, or pixel coordinates
for a raster without georeferencing) once; then a tile is kept when its footprint meets
the AOI and a detection when its centre lies inside it. Edges are densified before
reprojection so a box in degrees stays the right shape in a projected CRS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from osgeo import ogr, osr

from .errors import UserError

ogr.UseExceptions()
osr.UseExceptions()

DENSIFY_STEPS = 64


class AreaOfInterest:
    """A (multi)polygon in the raster's output coordinates."""

    def __init__(self, geometry: ogr.Geometry):
        self.geometry = geometry

    def meets_polygon(self, ring: np.ndarray) -> bool:
        """Whether a polygon given by its (k, 2) corners intersects the AOI."""
        return bool(self.geometry.Intersects(_polygon(ring)))

    def contains_points(self, xy: np.ndarray) -> np.ndarray:
        """Boolean mask of the (N, 2) points inside the AOI."""
        inside = np.zeros(len(xy), dtype=bool)
        point = ogr.Geometry(ogr.wkbPoint)
        for i, (x, y) in enumerate(np.asarray(xy, dtype=np.float64)):
            point.SetPoint_2D(0, float(x), float(y))
            inside[i] = self.geometry.Contains(point)
        return inside


def load_aoi(spec: str, raster_crs_wkt: Optional[str]) -> AreaOfInterest:
    """Parse ``--aoi``: "minx,miny,maxx,maxy[,CRS]" or the path of a vector file."""
    spec = spec.strip()
    if _looks_like_bbox(spec):
        geometry, crs = _bbox(spec)
    else:
        geometry, crs = _vector_file(spec)
    if crs is not None and raster_crs_wkt:
        geometry = _reproject(geometry, crs, raster_crs_wkt)
    elif crs is not None and not raster_crs_wkt:
        raise UserError("the raster has no CRS, so the area of interest must be given in pixel "
                        "coordinates (a bbox without a CRS)")
    if geometry.IsEmpty() or geometry.GetArea() <= 0:
        raise UserError("the area of interest is empty")
    return AreaOfInterest(geometry)


def _looks_like_bbox(spec: str) -> bool:
    parts = spec.split(",")
    if len(parts) < 4:
        return False
    try:
        [float(p) for p in parts[:4]]
    except ValueError:
        return False
    return True


def _bbox(spec: str) -> Tuple[ogr.Geometry, Optional[osr.SpatialReference]]:
    parts = spec.split(",", 4)
    minx, miny, maxx, maxy = (float(p) for p in parts[:4])
    if not (minx < maxx and miny < maxy):
        raise UserError(f"area of interest {spec!r} needs minx < maxx and miny < maxy")
    crs = _crs(parts[4].strip()) if len(parts) == 5 and parts[4].strip() else None
    ring = np.array([[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy]])
    return _polygon(ring), crs


def _crs(text: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    try:
        srs.SetFromUserInput(text)
    except RuntimeError:
        raise UserError(f"unknown CRS {text!r} in the area of interest; use e.g. EPSG:4326") from None
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _vector_file(spec: str) -> Tuple[ogr.Geometry, Optional[osr.SpatialReference]]:
    """All polygons of a vector file's first layer, or of ``path|layername=NAME`` (QGIS style)."""
    spec, _, layer_name = spec.partition("|layername=")
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        raise UserError(
            f"area of interest is neither a bbox 'minx,miny,maxx,maxy[,CRS]' nor an existing file: {spec}"
        )
    try:
        ds = ogr.Open(str(path))
    except RuntimeError:
        ds = None
    if ds is None or ds.GetLayerCount() == 0:
        raise UserError(f"cannot read {path} as a vector file for the area of interest")
    layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    if layer is None:
        raise UserError(f"{path} has no layer named {layer_name!r} for the area of interest")
    srs = layer.GetSpatialRef()
    if srs is not None:
        srs = srs.Clone()
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    parts: List[ogr.Geometry] = []
    for feature in layer:
        geom = feature.GetGeometryRef()
        kind = ogr.GT_Flatten(geom.GetGeometryType()) if geom is not None else None
        if kind in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
            parts.append(geom.Clone())
    if not parts:
        raise UserError(f"{path} has no polygons to use as the area of interest")
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for geom in parts:
        if ogr.GT_Flatten(geom.GetGeometryType()) == ogr.wkbPolygon:
            union.AddGeometry(geom)
        else:
            for i in range(geom.GetGeometryCount()):
                union.AddGeometry(geom.GetGeometryRef(i))
    return union.UnionCascaded(), srs


def _reproject(geometry: ogr.Geometry, source: osr.SpatialReference, target_wkt: str) -> ogr.Geometry:
    target = osr.SpatialReference()
    target.ImportFromWkt(target_wkt)
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if source.IsSame(target):
        return geometry
    minx, maxx, miny, maxy = geometry.GetEnvelope()
    geometry = geometry.Clone()
    geometry.Segmentize(max(maxx - minx, maxy - miny) / DENSIFY_STEPS)
    try:
        geometry.Transform(osr.CoordinateTransformation(source, target))
    except RuntimeError as exc:
        raise UserError(f"cannot bring the area of interest into the raster's CRS ({exc})") from None
    return geometry


def _polygon(ring: np.ndarray) -> ogr.Geometry:
    line = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in np.asarray(ring, dtype=np.float64):
        line.AddPoint_2D(float(x), float(y))
    x0, y0 = ring[0]
    line.AddPoint_2D(float(x0), float(y0))
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(line)
    return polygon
