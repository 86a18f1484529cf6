"""A Refined-Det checkpoint through the user paths: ``qgis-unravel detect`` and ``qgis_process``.

Uses the golden reduced Refined-Det (``tests/golden/refined_det/reduced_model.pth``, an mmrotate
checkpoint loaded unchanged) on a GeoTIFF; the layer must carry the same fields as an Oriented
R-CNN run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import golden_data
import numpy as np
import pytest
from osgeo import ogr  # before rasterio (test_engine_fakes): the other order crashes GDAL
from test_engine_fakes import write_raster
from test_plugin_support import install_plugin_zip

REPO = Path(__file__).resolve().parents[1]
GOLDEN = golden_data.expanded() / "refined_det"  # plain file names (checkpoints decompressed)
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
ENGINE_FIELDS = {
    "class_id",
    "class_name",
    "score",
    "angle_deg",
    "length_m",
    "width_m",
    "area_m2",
    "model",
    "source",
}


@pytest.fixture(scope="module")
def raster(tmp_path_factory) -> Path:
    image = np.load(GOLDEN / "reduced_model_io.npz")["image_rgb_uint8"]
    path = write_raster(tmp_path_factory.mktemp("rasters") / "refined.tif", image)
    return path


@pytest.fixture(scope="module")
def score_thr() -> float:
    return float(json.loads((GOLDEN / "info.json").read_text())["score_thr"])


def _read(path: Path) -> tuple:
    """(field names, feature count, EPSG code) of the first layer; the data source stays open
    while its layer is used (a freed data source crashes GDAL)."""
    source = ogr.Open(str(path))
    layer = source.GetLayer(0)
    definition = layer.GetLayerDefn()
    fields = {definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())}
    result = fields, layer.GetFeatureCount(), layer.GetSpatialRef().GetAuthorityCode(None)
    source = None
    return result


def test_detect_command_writes_the_engine_fields(tmp_path, raster, score_thr):
    out = tmp_path / "found.gpkg"
    cmd = [
        sys.executable,
        "-m",
        "qgis_unravel.app.cli",
        "detect",
        str(raster),
        "-o",
        str(out),
        "--model",
        str(GOLDEN / "reduced_model.pth"),
        "--device",
        "cpu",
        "--tile",
        "224",
        "--overlap",
        "0",
        "--score",
        str(score_thr),
        "--json",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")][-1]
    assert result["type"] == "result" and result["count"] > 0
    fields, count, epsg = _read(out)
    assert ENGINE_FIELDS <= fields and count == result["count"] and epsg == "32633"


@pytest.mark.skipif(not QGIS_PROCESS.is_file(), reason="qgis_process is not installed")
@pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="needs the project venv (torch)")
def test_qgis_process_runs_a_refined_det_checkpoint(tmp_path, raster, score_thr):
    env = install_plugin_zip(tmp_path, VENV_PYTHON)
    out = tmp_path / "found.gpkg"
    params = {
        "INPUT": str(raster),
        "MODEL_FILE": str(GOLDEN / "reduced_model.pth"),
        "DEVICE": 1,
        "TILE": 224,
        "OVERLAP": 0,
        "BATCH": 1,
        "SCORE": score_thr,
        "IOU": 0.1,
        "OUTPUT": str(out),
    }
    run = subprocess.run(
        [str(QGIS_PROCESS), "run", "unravel:detect", *[f"--{k}={v}" for k, v in params.items()]],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        cwd=str(tmp_path),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "objects written" in run.stdout
    fields, count, epsg = _read(out)
    assert ENGINE_FIELDS <= fields and count > 0 and epsg == "32633"
