"""Install the qgis-unravel engine (and the plugin code) as a Python package.

The top-level ``resources/`` and ``models/`` folders are installed inside the package as
``qgis_unravel/resources`` and ``qgis_unravel/models``, which is also where the QGIS plugin
zip puts them, so one lookup (``qgis_unravel.paths``) finds them in every layout.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def plugin_version() -> str:
    """The single source of the version: metadata.txt, which QGIS reads too."""
    text = (HERE / "metadata.txt").read_text(encoding="utf-8")
    return re.search(r"^version=(\S+)", text, re.M).group(1)


setup(
    name="qgis-unravel",
    version=plugin_version(),
    description="Oriented object detection (UnravelNet / LEGNet Oriented R-CNN) for rasters and QGIS",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["qgis_unravel", "qgis_unravel.*"])
    + ["qgis_unravel.resources", "qgis_unravel.models"],
    package_dir={"qgis_unravel.resources": "resources", "qgis_unravel.models": "models"},
    package_data={
        "qgis_unravel.resources": ["icons/*", "styles/*"],
        "qgis_unravel.models": ["*.json", "*.md", "*.pth"],
    },
    install_requires=[
        "torch>=2.0",
        "numpy>=1.21",
        "rasterio>=1.3",
        "pyproj>=3.3",
        "platformdirs>=2.5",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-qgis>=2", "pytest-timeout>=2", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["qgis-unravel=qgis_unravel.app.cli:main"]},
)
