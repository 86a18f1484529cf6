"""Where "Set up PyTorch" puts the worker's private environment, and whether one is ready.

Kept apart from ``torch_env`` (which makes the environment) so that finding the worker's Python
(``interpreter``) can ask "is there a ready environment?" without importing the set-up.
Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

APP_NAME = "qgis-unravel"
ENV_DIR = "QGIS_UNRAVEL_ENV"  # where the environment lives (default: the user data folder)
MARKER = "qgis-unravel-env.json"  # written only once the environment was verified


def data_dir() -> Path:
    """The user's data folder for the plugin (what platformdirs' ``user_data_dir`` gives)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def env_dir() -> Path:
    override = os.environ.get(ENV_DIR, "").strip()
    return Path(override).expanduser() if override else data_dir() / "worker-env"


def env_python(folder: Path | None = None) -> Path:
    folder = folder or env_dir()
    if sys.platform == "win32":
        return folder / "Scripts" / "python.exe"
    return folder / "bin" / "python"


def ready_python() -> str | None:
    """The environment's Python when a set-up completed there, else None."""
    folder = env_dir()
    python = env_python(folder)
    if (folder / MARKER).is_file() and python.is_file():
        return str(python)
    return None


def read_marker() -> dict:
    try:
        return json.loads((env_dir() / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
