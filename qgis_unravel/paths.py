"""Where the bundled resources and model cards live, in every layout.

In a source checkout they sit beside the package (``resources/``, ``models/``); in the QGIS
plugin zip and in an installed wheel they sit inside it (``qgis_unravel/resources``).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _first_existing(name: str) -> Path:
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    return PACKAGE_DIR / name


def resources_dir() -> Path:
    """Folder with ``icons/`` and ``styles/``."""
    return _first_existing("resources")


def models_dir() -> Path:
    """Folder with the model cards (``*.json``) and the weights the project ships."""
    return _first_existing("models")
