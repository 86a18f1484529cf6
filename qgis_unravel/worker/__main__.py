"""``python -m qgis_unravel.worker``: the warm worker the QGIS plugin talks to."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
