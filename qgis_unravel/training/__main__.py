"""``python -m qgis_unravel.training train|evaluate|synth ...``"""

import sys

from .cli import main

sys.exit(main())
