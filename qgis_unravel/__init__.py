"""qgis-unravel: oriented object detection for rasters, as a QGIS plugin and a Python engine.

This module is the QGIS plugin entry point (``classFactory``) and the engine's front door
(``load_detector``). Everything is imported lazily: importing the package needs neither QGIS
nor torch, so QGIS can load the plugin when torch is missing and the engine can run without QGIS.
"""

from __future__ import annotations

from typing import Any

__all__ = ["classFactory", "load_detector"]


def classFactory(iface: Any) -> Any:  # noqa: N802 (name fixed by QGIS)
    """Called by QGIS to create the plugin object."""
    from .plugin.main import UnravelPlugin

    return UnravelPlugin(iface)


def load_detector(path: Any, device: str = "cpu") -> Any:
    """Load an mmrotate Oriented R-CNN checkpoint into a native detector in eval mode."""
    from .detector.checkpoint import load_detector as _load

    return _load(path, device=device)
