"""Everything about a run that can be refused before the model loads and the first tile.

A run that would fail at the end (an existing layer, a missing folder, a format that cannot hold
polygons, an absurd processing resolution, an AOI off the raster) must fail in the first second,
not after hours of detection. Each entry point calls ``preflight`` right after the raster is
described; the engine and the writer keep their own checks for callers that skip it.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from .georef import Georeferencer
from .raster import RasterInfo
from .reader import processing_grid


def preflight(spec: Any, info: RasterInfo, cancel: Optional[threading.Event] = None) -> None:
    """Raise the UserError the run would end with, for everything knowable now.

    ``spec`` is a validated ``RunSpec`` (resolved or not); ``info`` describes its raster.
    """
    georef = Georeferencer(info.transform, info.crs_wkt, measurable=info.georeferenced)
    processing_grid(info.width, info.height, georef.pixel_size_m(info.width, info.height), spec.gsd)
    if spec.aoi:
        from .aoi import load_aoi

        load_aoi(spec.aoi, info.crs_wkt)
    if spec.output is not None:
        from .writer import check_output

        check_output(spec.output, spec.layer, spec.overwrite, spec.append, info.crs_wkt, cancel)
