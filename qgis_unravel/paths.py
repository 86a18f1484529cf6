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


def version() -> str:
    """The version of this copy of the package: its ``metadata.txt`` (checkout, plugin zip), else
    the installed distribution's metadata (wheel), else ``"unknown"``.

    The plugin compares the worker's answer with its own, so a worker that imported another
    copy of the engine is caught before it runs anything.
    """
    import re

    for folder in (PACKAGE_DIR, PACKAGE_DIR.parent):
        meta = folder / "metadata.txt"
        if meta.is_file():
            match = re.search(r"^version=(\S+)", meta.read_text(encoding="utf-8"), re.M)
            if match:
                return match.group(1)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("qgis-unravel")
    except Exception:  # not installed as a distribution either
        return "unknown"
