"""Where to detect: the extent choices of the dialog, turned into the engine's ``--aoi``."""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsProject,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

MODES = ("layer", "canvas", "drawn", "polygons")


class ExtentError(ValueError):
    """An extent choice that cannot be used; the message says what to do."""


def polygon_geometry_type():
    """The polygon geometry type: ``Qgis.GeometryType`` from QGIS 3.30 on, QgsWkbTypes before."""
    modern = getattr(Qgis, "GeometryType", None)
    return modern.Polygon if modern is not None else QgsWkbTypes.GeometryType.PolygonGeometry


def to_crs(rect: QgsRectangle, source: QgsCoordinateReferenceSystem,
           target: QgsCoordinateReferenceSystem) -> QgsRectangle:
    if source == target or not source.isValid() or not target.isValid():
        return QgsRectangle(rect)
    transform = QgsCoordinateTransform(source, target, QgsProject.instance())
    return transform.transformBoundingBox(rect)


def bbox_text(rect: QgsRectangle) -> str:
    """``minx,miny,maxx,maxy`` in the raster's CRS (the engine's default for a bare bbox)."""
    return ",".join(repr(round(v, 9)) for v in
                    (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()))


def clip_to_layer(rect: QgsRectangle, layer_extent: QgsRectangle) -> QgsRectangle:
    """The part of ``rect`` over the raster; an error when they do not overlap."""
    clipped = rect.intersect(layer_extent)
    if clipped.isEmpty():
        raise ExtentError("the chosen extent does not overlap the raster layer; pan the map over "
                          "the raster or choose another extent")
    return clipped


def polygons_file(layer: QgsVectorLayer, target: QgsCoordinateReferenceSystem,
                  folder: str | None = None) -> tuple[str, QgsRectangle]:
    """Write the polygons (the selection if any) in the raster CRS; return path and bounds."""
    if layer is None or not isinstance(layer, QgsVectorLayer):
        raise ExtentError("choose a polygon layer for the extent")
    if layer.geometryType() != polygon_geometry_type():
        raise ExtentError(f"{layer.name()} is not a polygon layer; choose a layer of polygons")
    handle, path = tempfile.mkstemp(prefix="unravel_aoi_", suffix=".gpkg", dir=folder)
    os.close(handle)
    os.remove(path)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "aoi"
    options.onlySelectedFeatures = layer.selectedFeatureCount() > 0
    options.ct = QgsCoordinateTransform(layer.crs(), target, QgsProject.instance())
    write = getattr(QgsVectorFileWriter, "writeAsVectorFormatV3", None) or \
        QgsVectorFileWriter.writeAsVectorFormatV2
    result = write(layer, path, QgsProject.instance().transformContext(), options)
    if result[0] != QgsVectorFileWriter.WriterError.NoError:
        raise ExtentError(f"could not write the polygons of {layer.name()}: {result[1]}")
    bounds = QgsRectangle()
    request = QgsFeatureRequest()
    if options.onlySelectedFeatures:
        request.setFilterFids(layer.selectedFeatureIds())
    for feature in layer.getFeatures(request):
        if feature.hasGeometry():
            bounds.combineExtentWith(feature.geometry().boundingBox())
    if bounds.isEmpty() or bounds.isNull():
        raise ExtentError(f"{layer.name()} has no polygons to detect in")
    return path, to_crs(bounds, layer.crs(), target)
