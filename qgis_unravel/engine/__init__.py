"""Large-raster detection as a pure pipeline: raster -> windows -> detector -> merge ->
georeference -> writer, driven by one resolved ``RunSpec``.

Only the run spec and the error types are imported here, so ``import qgis_unravel.engine``
stays cheap (no GDAL, rasterio or torch); the pipeline lives in its modules::

    from qgis_unravel.engine import RunSpec
    from qgis_unravel.engine.detect import detect_raster
    from qgis_unravel.engine.writer import write_detections
"""

from __future__ import annotations

from .errors import Cancelled, UserError
from .spec import ModelDefaults, RunSpec

__all__ = ["Cancelled", "ModelDefaults", "RunSpec", "UserError"]
