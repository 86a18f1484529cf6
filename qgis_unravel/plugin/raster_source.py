"""Turn any raster layer QGIS shows into a file the worker can read.

File-based layers (GDAL provider) are read by the worker directly. Everything else (WMS, XYZ,
WCS, virtual rasters of other providers) is written first, for the requested extent and
resolution, to a temporary GeoTIFF with QGIS's own raster writer, exactly as QGIS renders it.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsUnitTypes,
)

MAX_EXPORT_PIXELS = 200_000_000


class SourceError(ValueError):
    """A raster that cannot be prepared; the message says what to change."""


def file_path(layer: QgsRasterLayer) -> str | None:
    """The path GDAL can open for a file-based layer, else None."""
    if layer.providerType() != "gdal":
        return None
    source = layer.source()
    parts = QgsProviderRegistry.instance().decodeUri("gdal", source)
    path = parts.get("path") or source
    if os.path.exists(path) and not parts.get("layerName"):
        return path
    return source  # a GDAL connection string (subdataset, /vsi...) the worker's GDAL opens too


@dataclass
class ExportSpec:
    """What to write for a non-file layer; built on the main thread, written in the task."""

    layer_name: str
    provider: object  # a clone of the layer's data provider, safe to use in another thread
    crs: QgsCoordinateReferenceSystem
    extent: QgsRectangle
    width: int
    height: int

    def write(self, folder: str | None = None, feedback=None) -> str:
        """Write the GeoTIFF and return its path."""
        handle, path = tempfile.mkstemp(prefix="unravel_", suffix=".tif", dir=folder)
        os.close(handle)
        pipe = QgsRasterPipe()
        if not pipe.set(self.provider):
            raise SourceError(f"QGIS could not read the layer {self.layer_name!r} for export")
        writer = QgsRasterFileWriter(path)
        writer.setOutputFormat("GTiff")
        writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
        code = writer.writeRaster(pipe, self.width, self.height, self.extent, self.crs,
                                  QgsProject.instance().transformContext(), feedback)
        if code != 0:  # QgsRasterFileWriter.NoError
            raise SourceError(f"writing {self.layer_name!r} to a temporary GeoTIFF failed "
                              f"(QGIS raster writer error {int(code)})")
        return path


def export_spec(layer: QgsRasterLayer, extent: QgsRectangle, units_per_pixel: float) -> ExportSpec:
    """Plan the export of ``extent`` (layer CRS) at ``units_per_pixel`` (layer units)."""
    if extent.isEmpty():
        raise SourceError("the extent to detect in is empty: zoom to the area or choose another extent")
    if not units_per_pixel or units_per_pixel <= 0 or not math.isfinite(units_per_pixel):
        raise SourceError("cannot tell the resolution to fetch the layer at; zoom in on the map")
    width = max(1, int(round(extent.width() / units_per_pixel)))
    height = max(1, int(round(extent.height() / units_per_pixel)))
    if width * height > MAX_EXPORT_PIXELS:
        raise SourceError(
            f"{layer.name()} is not a local file, so it has to be downloaded first, and the chosen "
            f"extent is {width} x {height} pixels at this resolution. Choose a smaller extent "
            f"(\"Map canvas\" or one drawn on the map) or zoom in.")
    return ExportSpec(layer.name(), layer.dataProvider().clone(), layer.crs(), extent, width, height)


def canvas_units_per_pixel(canvas, layer: QgsRasterLayer) -> float:
    """The canvas resolution expressed in the layer's CRS units (what the user sees)."""
    settings = canvas.mapSettings()
    extent = settings.visibleExtent()
    if settings.destinationCrs() == layer.crs():
        return settings.mapUnitsPerPixel()
    transform = QgsCoordinateTransform(settings.destinationCrs(), layer.crs(), QgsProject.instance())
    in_layer = transform.transformBoundingBox(extent)
    size = settings.outputSize()
    return max(in_layer.width() / max(1, size.width()), in_layer.height() / max(1, size.height()))


def effective_gsd(gsd: float | None, layer) -> float | None:
    """The processing resolution to send: None when the raster already has it (within 1 %), so a
    raster at the model's resolution is processed on its own pixels, unresampled (the dialog and
    Processing both ask this)."""
    if not gsd or layer is None or not hasattr(layer, "rasterUnitsPerPixelX"):
        return gsd or None
    crs = layer.crs()
    if crs.isGeographic() or crs.mapUnits() != QgsUnitTypes.DistanceUnit.DistanceMeters:
        return gsd
    native = layer.rasterUnitsPerPixelX()
    return None if native > 0 and abs(native - gsd) <= 0.01 * gsd else gsd
