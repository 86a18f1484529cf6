"""Synthetic georeferenced scenes with oriented objects, for training, tests and the demo.

``write_scene(path_tif, path_gpkg, seed, size)`` writes an RGB GeoTIFF and a GeoPackage layer
``objects`` of polygons with a ``class`` field; ``make_scene`` gives the same in pixel space.
"""

from __future__ import annotations

from .io import CLASS_FIELD, LABEL_LAYER, write_scene
from .objects import CLASS_NAMES
from .scene import Scene, make_scene

__all__ = ["CLASS_FIELD", "CLASS_NAMES", "LABEL_LAYER", "Scene", "make_scene", "write_scene"]
