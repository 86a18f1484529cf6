"""Rasters lacking a CRS, a geotransform or both: results land where QGIS 3.22 shows the image.

QGIS gives a raster without a geotransform the affine (0, 1, 0, 0, 0, -1) and a raster without
a CRS an invalid CRS, drawn untransformed in the project's coordinates. The engine follows the
same rule and the GeoPackage says "undefined Cartesian" (srs_id -1), which QGIS also draws
untransformed. Checked in real headless QGIS with an EPSG:3857 project.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from rasterio.transform import from_origin
from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.engine.detect import detect_raster
from qgis_unravel.engine.writer import write_detections

RECTS = [(60.0, 40.0, 40.0, 16.0, 0.3, (250, 40, 40)), (150.0, 90.0, 30.0, 14.0, -0.5, (40, 250, 40))]


def _jpeg(path: Path) -> Path:
    """A JPEG with no georeferencing at all (no world file, no .aux.xml)."""
    data = scene(128, 200, RECTS)
    mem = gdal.GetDriverByName("MEM").Create("", 200, 128, 3)
    for band in range(3):
        mem.GetRasterBand(band + 1).WriteArray(data[:, :, band])
    gdal.GetDriverByName("JPEG").CreateCopy(str(path), mem, options=["QUALITY=95"])
    for sidecar in path.parent.glob(path.name + ".aux.xml"):
        sidecar.unlink()
    return path


def _centres(result) -> np.ndarray:
    return np.asarray(result.polygons).mean(axis=1)


def test_a_raster_with_a_geotransform_but_no_crs_gets_its_coordinates(tmp_path):
    transform = from_origin(500000.0, 5000000.0, 0.5, 0.5)
    path = write_raster(tmp_path / "nocrs.tif", scene(128, 200, RECTS), transform=transform, crs=None)
    result = detect_raster(path, BrightObjectDetector(tile_size=256, overlap=0))
    assert result.crs_wkt is None and len(result) == 2
    centres = sorted(map(tuple, _centres(result).round(0)))
    assert centres == [(500030.0, 4999980.0), (500075.0, 4999955.0)]
    assert any("geotransform but no CRS" in w for w in result.warnings)
    assert not any("no geotransform" in w for w in result.warnings)
    assert np.isnan(result.length_m).all()


def test_an_image_without_georeferencing_gets_pixels_with_y_up(tmp_path):
    result = detect_raster(_jpeg(tmp_path / "photo.jpg"), BrightObjectDetector(tile_size=256, overlap=0))
    assert result.crs_wkt is None and len(result) == 2
    centres = sorted(map(tuple, _centres(result).round(0)))
    assert centres == [(60.0, -40.0), (150.0, -90.0)]
    assert any("no georeferencing" in w for w in result.warnings)


def _extents_in_project(raster_path: Path, vector_path: Path, project_crs: str):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsProject,
        QgsRasterLayer,
        QgsVectorLayer,
    )

    project = QgsProject()
    project.setCrs(QgsCoordinateReferenceSystem(project_crs))
    raster = QgsRasterLayer(str(raster_path), "image")
    vector = QgsVectorLayer(str(vector_path), "found", "ogr")
    assert raster.isValid() and vector.isValid()
    project.addMapLayers([raster, vector])
    out = []
    for layer in (raster, vector):
        to_project = QgsCoordinateTransform(layer.crs(), project.crs(), project)
        box = to_project.transformBoundingBox(layer.extent())
        out.append((box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()))
    return out


@pytest.mark.qgis
@pytest.mark.parametrize("kind", ["jpeg", "geotransform only"])
def test_results_line_up_with_the_image_in_a_web_mercator_project(tmp_path, kind):
    if kind == "jpeg":
        image = _jpeg(tmp_path / "photo.jpg")
    else:
        image = write_raster(tmp_path / "nocrs.tif", scene(128, 200, RECTS),
                             transform=from_origin(500000.0, 5000000.0, 0.5, 0.5), crs=None)
    result = detect_raster(image, BrightObjectDetector(tile_size=256, overlap=0))
    out = tmp_path / "found.gpkg"
    write_detections(result, out)
    (rx0, ry0, rx1, ry1), (vx0, vy0, vx1, vy1) = _extents_in_project(image, out, "EPSG:3857")
    # the detections lie on the image, not kilometres (or a continent) away
    assert rx0 <= vx0 < vx1 <= rx1 and ry0 <= vy0 < vy1 <= ry1
    pixel = (rx1 - rx0) / 200.0
    # the green object (centre column 150, row 90) is where the image shows it
    green = np.asarray(result.polygons)[np.asarray(result.class_ids) == 1].mean(axis=1)[0]
    assert abs(green[0] - (rx0 + 150 * pixel)) < 1.5 * pixel
    assert abs(green[1] - (ry1 - 90 * pixel)) < 1.5 * pixel
