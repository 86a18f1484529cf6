"""`make demo`: the demo model on the generated example scene, end to end, read back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from osgeo import ogr


def test_demo_writes_a_styled_geopackage_and_scores_it(tmp_path: Path, repo_root: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "qgis_unravel.app.demo", "--out", str(tmp_path)],
                          cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "demo-unravelnet-synthetic" in done.stdout  # says which model it used
    assert "mAP" in done.stdout  # evaluation read the styled GeoPackage (it has layer_styles too)
    source = ogr.Open(str(tmp_path / "detections.gpkg"))
    layer = source.GetLayerByName("detections")
    assert layer.GetFeatureCount() > 20
    assert source.GetLayerByName("layer_styles") is not None
