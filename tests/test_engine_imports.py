"""The engine and its applications never import QGIS or Qt: they run in a worker process and on servers."""

from __future__ import annotations

import subprocess
import sys

ENGINE_MODULES = ["engine." + name for name in (
    "aoi", "contract", "detect", "errors", "georef", "merge", "projdata", "raster", "reader", "result",
    "scaling", "spec", "style", "windows", "writer")] + ["app." + name for name in (
    "cli", "demo", "models_cli", "terminal", "train_cli", "worker")]


def test_engine_modules_import_without_qgis_or_qt():
    code = (
        "import sys, importlib\n"
        f"for name in {ENGINE_MODULES!r}:\n"
        "    importlib.import_module('qgis_unravel.' + name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6'))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_importing_the_engine_package_is_cheap():
    code = "import sys, qgis_unravel.engine; print(sorted({'torch', 'rasterio', 'osgeo'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
