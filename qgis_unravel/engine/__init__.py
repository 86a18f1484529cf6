"""Large-raster detection: windows, reading, merging, georeferencing, writers and the CLI.

The public entry points are loaded on first use, so ``import qgis_unravel.engine`` stays
cheap (no GDAL, rasterio or torch until something needs them)::

    from qgis_unravel.engine import RunSpec, detect_raster, write_detections
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "RunSpec": ".spec",
    "ModelDefaults": ".spec",
    "Detector": ".contract",
    "detect_raster": ".detect",
    "write_detections": ".writer",
    "RasterDetections": ".result",
    "UserError": ".errors",
    "Cancelled": ".errors",
    "categorized_qml": ".style",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
