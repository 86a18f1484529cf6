"""``python -m qgis_unravel.zoo models list|info|download``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
