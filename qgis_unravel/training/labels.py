"""Reading a labelled polygon layer (what a QGIS user draws) as oriented boxes in a raster's
pixel space: reprojected to the raster's CRS, then each polygon's minimum-area rectangle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .geometry import min_area_rect

MIN_SIDE = 2.0  # mmrotate drops boxes with a side under 2 pixels

PathLike = Union[str, Path]


class LabelError(ValueError):
    """The label layer cannot be used; the message says what to fix."""


@dataclass
class RasterLabels:
    """Objects of one raster: le90 boxes (N, 5) in pixels and class names (N,)."""

    boxes: np.ndarray
    names: List[str]
    scores: Optional[np.ndarray] = None  # (N,) when read with a score field (detection layers)

    def encode(self, classes: Sequence[str]) -> np.ndarray:
        """Class indices (N,) for a class list; names not in it become -1."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(n, -1) for n in self.names], dtype=np.int64)


def _open_layer(path: PathLike, layer: Optional[str]):
    from osgeo import ogr

    ds = ogr.Open(str(path))
    if ds is None:
        raise LabelError(f"cannot open the label file {path}: not a vector dataset GDAL can read")
    # Non-spatial tables (such as QGIS's layer_styles in a styled GeoPackage) are not candidates.
    names = [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())
             if ds.GetLayer(i).GetGeomType() != ogr.wkbNone]
    if layer is None:
        if len(names) != 1:
            raise LabelError(f"{path} has {len(names)} layers ({', '.join(names)}); choose one with --layer")
        lyr = ds.GetLayerByName(names[0])
    else:
        lyr = ds.GetLayerByName(layer)
        if lyr is None:
            raise LabelError(f"{path} has no layer {layer!r}; its layers are: {', '.join(names)}")
    return ds, lyr


def _transform_to(lyr, raster_crs_wkt: Optional[str]):
    """A coordinate transformation from the layer's CRS to the raster's, or None if the same."""
    from osgeo import osr

    src = lyr.GetSpatialRef()
    if src is None or not raster_crs_wkt:
        return None
    dst = osr.SpatialReference()
    dst.ImportFromWkt(raster_crs_wkt)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if src.IsSame(dst):
        return None
    return osr.CoordinateTransformation(src, dst)


def _outer_points(geom) -> np.ndarray:
    """All exterior-ring vertices of a polygon or multipolygon, as (N, 2)."""
    from osgeo import ogr

    gtype = ogr.GT_Flatten(geom.GetGeometryType())
    if gtype == ogr.wkbPolygon:
        parts = [geom]
    elif gtype == ogr.wkbMultiPolygon:
        parts = [geom.GetGeometryRef(i) for i in range(geom.GetGeometryCount())]
    else:
        raise LabelError(f"label geometries must be polygons, found {geom.GetGeometryName()}")
    pts = [np.array(p.GetGeometryRef(0).GetPoints())[:, :2] for p in parts if p.GetGeometryCount()]
    return np.vstack(pts) if pts else np.zeros((0, 2))


def read_labels(
    path: PathLike,
    transform,
    crs_wkt: Optional[str],
    class_field: str = "class",
    layer: Optional[str] = None,
    score_field: Optional[str] = None,
) -> RasterLabels:
    """Boxes of every polygon of the layer, in the pixel space of a raster (affine ``transform``);
    with ``score_field`` also each feature's score (for detection layers)."""
    ds, lyr = _open_layer(path, layer)
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if class_field not in fields:
        raise LabelError(
            f"the label layer has no field {class_field!r}; its fields are: "
            f"{', '.join(fields) or '(none)'}; choose the class field with --class-field"
        )
    if score_field is not None and score_field not in fields:
        raise LabelError(
            f"the detection layer has no field {score_field!r}; its fields are: "
            f"{', '.join(fields) or '(none)'}; choose it with --score-field"
        )
    to_raster = _transform_to(lyr, crs_wkt)
    inverse = ~transform
    boxes, names, scores = [], [], []
    for feat in lyr:
        geom = feat.GetGeometryRef()
        value = feat.GetField(class_field)
        if geom is None or value is None or str(value).strip() == "":
            continue
        geom = geom.Clone()
        if to_raster is not None:
            geom.Transform(to_raster)
        world = _outer_points(geom)
        if len(world) < 3:
            continue
        cols, rows = inverse * (world[:, 0], world[:, 1])
        try:
            box = min_area_rect(np.stack([cols, rows], axis=1))
        except ValueError:
            continue
        if box[2] < MIN_SIDE or box[3] < MIN_SIDE:
            continue
        boxes.append(box)
        names.append(str(value).strip())
        if score_field is not None:
            scores.append(float(feat.GetField(score_field) or 0.0))
    del ds  # closes the file
    return RasterLabels(
        np.array(boxes, dtype=np.float64).reshape(-1, 5),
        names,
        np.array(scores, dtype=np.float64) if score_field is not None else None,
    )
