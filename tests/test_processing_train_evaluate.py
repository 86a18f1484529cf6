"""Processing algorithms ``unravel:train`` and ``unravel:evaluate``: in this QGIS process (the
jobs run in the worker Python), cancel and resume, and headless through ``qgis_process`` with
the plugin installed from its zip in a fresh profile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsApplication, QgsProcessingException, QgsSettings
from test_plugin_support import QGIS_PROCESS, install_plugin_zip

from qgis_unravel.detector.checkpoint import read_checkpoint
from qgis_unravel.plugin import job_runner
from qgis_unravel.plugin.processing.provider import UnravelProvider
from qgis_unravel.synthetic import write_scene

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="needs the project venv (torch)")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    tif, gpkg = folder / "scene_7.tif", folder / "scene_7.gpkg"
    write_scene(tif, gpkg, seed=7, size=256)
    dets = folder / "dets.gpkg"
    _labels_as_detections(gpkg, dets)
    return tif, gpkg, dets


def _labels_as_detections(labels: Path, out: Path) -> None:
    """The labels themselves as a detection layer (fields class_name, score): a perfect result."""
    src = ogr.Open(str(labels))
    layer = src.GetLayer(0)
    dst = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    lyr = dst.CreateLayer("detections", layer.GetSpatialRef(), ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    lyr.CreateField(ogr.FieldDefn("score", ogr.OFTReal))
    for i, feat in enumerate(layer):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(feat.GetGeometryRef().Clone())
        f.SetField("class_name", feat.GetField("class"))
        f.SetField("score", 0.9 - 0.001 * i)
        lyr.CreateFeature(f)
    dst = src = None


@pytest.fixture(scope="module")
def provider(qgis_processing):
    registry = QgsApplication.processingRegistry()
    if registry.providerById("unravel") is None:
        registry.addProvider(UnravelProvider())
    QgsSettings().remove("qgis_unravel/worker_python")
    yield registry.providerById("unravel")


def train_params(tif, gpkg, out, **extra):
    base = {"RASTERS": [str(tif)], "LABELS": str(gpkg), "CLASS_FIELD": "class", "PRESET": "pico",
            "ITERATIONS": 2, "BATCH": 1, "TILE": 256, "OVERLAP": 0, "DEVICE": 0, "OUTPUT": str(out)}
    base.update(extra)
    return base


def test_algorithms_are_registered(provider):
    registry = QgsApplication.processingRegistry()
    train = registry.algorithmById("unravel:train")
    evaluate = registry.algorithmById("unravel:evaluate")
    assert train is not None and evaluate is not None
    assert {"RASTERS", "LABELS", "CLASS_FIELD", "DOTA", "PRESET", "RESUME", "OUTPUT"} <= {
        p.name() for p in train.parameterDefinitions()}
    assert {"DETECTIONS", "LABELS", "RASTER", "TABLE", "PLOT"} <= {
        p.name() for p in evaluate.parameterDefinitions()}


def test_train_then_resume(provider, scene, tmp_path):
    import processing

    tif, gpkg, _ = scene
    out = tmp_path / "run"
    result = processing.run("unravel:train", train_params(tif, gpkg, out))
    assert Path(result["CHECKPOINT"]) == out / "latest.pth"
    _, meta = read_checkpoint(out / "latest.pth")
    assert meta["iter"] == 2
    processing.run("unravel:train", train_params(tif, gpkg, out, ITERATIONS=3, RESUME=True))
    _, meta = read_checkpoint(out / "latest.pth")
    assert meta["iter"] == 3 and (out / "iter_3.pth").is_file()


def test_training_without_data_is_a_user_error(provider, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="no training data"):
        processing.run("unravel:train", {"PRESET": "pico", "OUTPUT": str(tmp_path / "x")})


def test_cancel_stops_with_a_checkpoint_to_resume(scene, tmp_path):
    tif, gpkg, _ = scene
    seen = []
    args = ["--raster", str(tif), "--labels", str(gpkg), "--preset", "pico", "--iterations", "50",
            "--batch-size", "1", "--tile-size", "256", "--overlap", "0", "--out", str(tmp_path / "c")]
    started = lambda: any(m["type"] == "progress" for m in seen)  # noqa: E731
    result = job_runner.run_job("train", args, seen.append, started, python=str(VENV_PYTHON))
    assert result["partial"] is True and 1 <= result["iteration"] < 50
    _, meta = read_checkpoint(tmp_path / "c" / "latest.pth")
    assert meta["iter"] == result["iteration"]


def test_evaluate_perfect_detections(provider, scene, tmp_path):
    import processing

    tif, gpkg, dets = scene
    result = processing.run("unravel:evaluate", {
        "DETECTIONS": str(dets), "LABELS": str(gpkg), "RASTER": str(tif),
        "TABLE": str(tmp_path / "ap.html"), "PLOT": str(tmp_path / "pr.png")})
    assert result["MAP"] == pytest.approx(1.0)
    assert "mAP" in (tmp_path / "ap.html").read_text() and (tmp_path / "pr.png").stat().st_size > 1000


@pytest.mark.skipif(not QGIS_PROCESS.is_file(), reason="qgis_process is not installed")
def test_qgis_process_train_and_evaluate_from_the_zip(tmp_path, scene):
    tif, gpkg, dets = scene
    env = install_plugin_zip(tmp_path, VENV_PYTHON)
    env.pop("PYTHONPATH", None)  # the plugin must work from the profile, not from the checkout
    out = tmp_path / "run"
    args = [f"--{k}={v}" for k, v in train_params(tif, gpkg, out).items() if k != "RASTERS"]
    train = subprocess.run([str(QGIS_PROCESS), "run", "unravel:train", f"--RASTERS={tif}", *args], env=env,
                           capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert (out / "latest.pth").is_file() and "CHECKPOINT" in train.stdout
    table = tmp_path / "ap.html"
    evaluate = subprocess.run(
        [str(QGIS_PROCESS), "run", "unravel:evaluate", f"--DETECTIONS={dets}", f"--LABELS={gpkg}",
         f"--RASTER={tif}", f"--TABLE={table}"],
        env=env, capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    values = [line.split(":", 1)[1] for line in evaluate.stdout.splitlines() if line.startswith("MAP:")]
    assert values and float(values[0]) == pytest.approx(1.0), evaluate.stdout[-2000:]
    assert "mAP" in table.read_text()


def test_evaluate_inside_a_processing_model(provider, scene, tmp_path):
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterVectorLayer,
    )

    tif, gpkg, dets = scene
    model = QgsProcessingModelAlgorithm("score detections", "tests")
    model.addModelParameter(QgsProcessingParameterVectorLayer("found", "Found"),
                            QgsProcessingModelParameter("found"))
    child = QgsProcessingModelChildAlgorithm("unravel:evaluate")
    child.setChildId("evaluate")
    source = QgsProcessingModelChildParameterSource
    child.addParameterSources("DETECTIONS", [source.fromModelParameter("found")])
    for name, value in {"LABELS": str(gpkg), "RASTER": str(tif)}.items():
        child.addParameterSources(name, [source.fromStaticValue(value)])
    output = QgsProcessingModelOutput("table")
    output.setChildOutputName("TABLE")
    child.setModelOutputs({"table": output})
    model.addChildAlgorithm(child)
    result = processing.run(model, {"found": str(dets), "evaluate:table": str(tmp_path / "t.html")})
    assert "mAP" in Path(result["evaluate:table"]).read_text()
