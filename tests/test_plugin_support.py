"""Helpers for tests that run the plugin the way users get it: the zip from ``make plugin``
unzipped into a fresh QGIS profile, enabled for ``qgis_process``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")


def install_plugin_zip(tmp_path: Path, worker_python: Path) -> dict:
    """Build the zip, install it in a new profile under ``tmp_path``, enable it; the environment
    for running ``qgis_process`` with that profile and worker Python."""
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), "--out", str(dist)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    profile = tmp_path / "config"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    zipfile.ZipFile(built.stdout.strip().splitlines()[-1]).extractall(plugins)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile),
               QGIS_UNRAVEL_PYTHON=str(worker_python))
    enabled = subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "qgis_unravel"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env
