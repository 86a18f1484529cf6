"""Writing a synthetic scene as a georeferenced GeoTIFF plus a GeoPackage of labelled polygons,
the same two layers a QGIS user would have for training or evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .objects import CLASS_NAMES, corners
from .scene import Scene, make_scene

CRS_EPSG = 32631  # WGS 84 / UTM zone 31N
GSD = 0.15  # metres per pixel
LABEL_LAYER = "objects"
CLASS_FIELD = "class"

PathLike = Union[str, Path]


def scene_transform(seed: int):
    """Affine pixel -> map transform: north-up, fixed GSD, origin moved by the seed."""
    from rasterio.transform import from_origin

    x0 = 440000.0 + (seed % 97) * 2000.0
    y0 = 5420000.0 - (seed % 89) * 2000.0
    return from_origin(x0, y0, GSD, GSD)


def write_geotiff(path: PathLike, image: np.ndarray, transform, epsg: int = CRS_EPSG) -> None:
    """RGB uint8 GeoTIFF, tiled and deflate-compressed."""
    import rasterio
    from rasterio.crs import CRS

    height, width = image.shape[:2]
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs=CRS.from_epsg(epsg),
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        photometric="RGB",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))


def write_polygons(
    path: PathLike,
    boxes: np.ndarray,
    labels: Sequence[int],
    transform,
    names: Sequence[str] = CLASS_NAMES,
    epsg: int = CRS_EPSG,
    layer: str = LABEL_LAYER,
) -> None:
    """Oriented boxes (pixels) as map-coordinate polygons with a ``class`` text field."""
    from osgeo import ogr, osr

    path = Path(path)
    driver = ogr.GetDriverByName("GPKG")
    if path.exists():
        driver.DeleteDataSource(str(path))
    ds = driver.CreateDataSource(str(path))
    if ds is None:
        raise OSError(f"cannot create GeoPackage {path}")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    lyr = ds.CreateLayer(layer, srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn(CLASS_FIELD, ogr.OFTString))
    lyr.StartTransaction()
    for box, label in zip(boxes, labels):
        ring = ogr.Geometry(ogr.wkbLinearRing)
        pts = corners(box)
        for col, row in list(pts) + [pts[0]]:
            x, y = transform * (float(col), float(row))
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        feat = ogr.Feature(lyr.GetLayerDefn())
        feat.SetField(CLASS_FIELD, names[int(label)])
        feat.SetGeometry(poly)
        lyr.CreateFeature(feat)
    lyr.CommitTransaction()
    ds = None


def write_scene(
    path_tif: PathLike, path_gpkg: PathLike, seed: int, size: int = 1024, density: float = 1.0
) -> Scene:
    """Generate scene ``seed`` and write its GeoTIFF and its labels GeoPackage; returns the scene."""
    scene = make_scene(seed, size, density)
    transform = scene_transform(seed)
    write_geotiff(path_tif, scene.image, transform)
    write_polygons(path_gpkg, scene.boxes, scene.labels, transform)
    return scene
