"""Handing Processing's layers to a worker job as files it can open with GDAL/OGR."""

from __future__ import annotations

import os
import uuid

from qgis.core import (
    QgsProcessingException,
    QgsProject,
    QgsProviderRegistry,
    QgsVectorFileWriter,
)

from .. import raster_source
from ..jobs import temp_dir


def vector_file(layer, name: str, cleanup: list) -> tuple[str, str | None]:
    """(path, layer name) of a file-based vector layer, or of a temporary GeoPackage copy."""
    if layer.providerType() == "ogr":
        parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
        path = parts.get("path")
        if path and os.path.isfile(path):
            return path, parts.get("layerName") or None
    out = os.path.join(temp_dir(), f"{name}_{uuid.uuid4().hex[:8]}.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = name
    error = QgsVectorFileWriter.writeAsVectorFormatV2(
        layer, out, QgsProject.instance().transformContext(), options)
    if error[0] != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"could not copy {layer.name()} for the worker: {error[1]}")
    cleanup.append(out)
    return out, name


def raster_file(layer) -> str:
    """The file of a raster layer (training and evaluation read rasters by path)."""
    if layer is None or not layer.isValid():
        raise QgsProcessingException("a raster layer is not valid")
    path = raster_source.file_path(layer)
    if path is None:
        raise QgsProcessingException(
            f"{layer.name()} is not a local raster file; save it as a GeoTIFF first (Export > Save As)")
    return path


def remove_files(paths: list) -> None:
    for path in paths:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except OSError:
                pass
