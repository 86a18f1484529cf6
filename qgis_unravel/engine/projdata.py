"""Point pyproj at PROJ's data when it cannot find it by itself.

pyproj looks for ``proj.db`` beside itself, in ``$PROJ_DATA`` and under ``sys.prefix``.
In a virtual environment built on Debian's python3-pyproj none of those holds it (it is in
/usr/share/proj), and every CRS operation would then fail. GDAL knows where its PROJ data
is, so ask it, then try the usual system folders.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

_done = False


def ensure_proj_data() -> None:
    """Make ``pyproj`` usable; a no-op when it already finds its data."""
    global _done
    if _done:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyproj warns at import when it finds no data
        import pyproj.datadir

        try:
            pyproj.datadir.get_data_dir()
            _done = True
            return
        except Exception:  # pyproj raises DataDirError, older versions other types
            pass
    for folder in _candidates():
        if (folder / "proj.db").is_file():
            pyproj.datadir.set_data_dir(str(folder))
            break
    _done = True


def _candidates() -> list[Path]:
    found = []
    try:
        from osgeo import osr

        found += [Path(p) for p in (osr.GetPROJSearchPaths() or [])]
    except Exception:  # GDAL without osr, or an old one without the call
        pass
    for env in ("PROJ_DATA", "PROJ_LIB"):
        found += [Path(p) for p in os.environ.get(env, "").split(os.pathsep) if p]
    found += [Path("/usr/share/proj"), Path("/usr/local/share/proj"), Path("/opt/homebrew/share/proj")]
    return found
