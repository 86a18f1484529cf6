"""The Processing algorithm ``unravel:detect``: in this QGIS process and through ``qgis_process``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import golden_data
import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProject,
    QgsSettings,
    QgsVectorLayer,
)
from rasterio.transform import from_origin
from test_plugin_support import install_plugin_zip

from qgis_unravel.plugin import runtime
from qgis_unravel.plugin.processing.provider import UnravelProvider

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
ENGINE_FIELDS = {"class_id", "class_name", "score", "angle_deg", "length_m", "width_m", "area_m2",
                 "model", "source"}

pytestmark = pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="needs the project venv (torch)")


@pytest.fixture(scope="module")
def small_raster(tmp_path_factory, golden_dir) -> Path:
    image = np.load(golden_dir / "reduced_model_io.npz")["image_rgb_uint8"]
    path = tmp_path_factory.mktemp("rasters") / "small.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5)) as ds:
        ds.write(np.moveaxis(image, 2, 0))
    return path


@pytest.fixture(scope="module")
def provider(qgis_processing):
    registry = QgsApplication.processingRegistry()
    if registry.providerById("unravel") is None:
        instance = UnravelProvider()
        registry.addProvider(instance)
    QgsSettings().remove("qgis_unravel/worker_python")
    runtime.set_keep_warm(True)  # one warm worker for the module, as in the desktop
    yield registry.providerById("unravel")
    existing = registry.providerById("unravel")
    if existing is not None:
        registry.removeProvider(existing)


def params(raster: Path, golden_dir: Path, **extra) -> dict:
    base = {"INPUT": str(raster), "MODEL_FILE": str(golden_dir / "reduced_model.pth"), "DEVICE": 1,
            "TILE": 256, "OVERLAP": 0, "BATCH": 1,
            "SCORE": golden_data.reduced_run(golden_dir)["score_thr"], "IOU": 0.1,
            "OUTPUT": "TEMPORARY_OUTPUT"}
    base.update(extra)
    return base


def test_parameters_mirror_the_dialog(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("unravel:detect")
    names = {p.name() for p in algorithm.parameterDefinitions()}
    assert {"INPUT", "MODEL", "MODEL_FILE", "DEVICE", "TILE", "OVERLAP", "BATCH", "SCORE", "IOU",
            "CLASSES", "EXTENT", "AOI", "LABELS", "OUTPUT"} <= names


def test_model_is_a_choice_of_models_that_can_run_plus_a_file(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("unravel:detect")
    model = algorithm.parameterDefinition("MODEL")
    assert model.type() == "enum" and model.usesStaticStrings()
    assert "demo-unravelnet-synthetic" in model.options()
    assert "unravelnet-t-orcnn-dota10" not in model.options()  # weights never published
    assert model.defaultValue() in model.options()
    assert algorithm.parameterDefinition("MODEL_FILE").type() == "file"


def test_run_and_load_styles_output_by_class(provider, qgis_new_project, small_raster, golden_dir):
    import processing

    chosen = golden_data.frequent_classes(golden_dir, 2)
    result = processing.runAndLoadResults("unravel:detect", params(small_raster, golden_dir,
                                                                   CLASSES=", ".join(chosen)))
    layer = QgsProject.instance().mapLayer(result["OUTPUT"])
    assert isinstance(layer, QgsVectorLayer)
    assert ENGINE_FIELDS <= set(layer.fields().names())
    assert layer.crs().authid() == "EPSG:32633"
    assert layer.featureCount() > 0
    assert {f["class_name"] for f in layer.getFeatures()} <= set(chosen)
    QgsApplication.processEvents()
    assert layer.renderer().type() == "categorizedSymbol"  # the post-processor ran


def test_user_errors_become_processing_exceptions(provider, small_raster, golden_dir, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="not found"):
        missing = str(tmp_path / "no.pth")
        processing.run("unravel:detect", params(small_raster, golden_dir, MODEL_FILE=missing))


def test_extent_outside_raster_is_a_user_error(provider, small_raster, golden_dir):
    import processing

    outside = "0,10,0,10 [EPSG:32633]"
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        processing.run("unravel:detect", params(small_raster, golden_dir, EXTENT=outside))


@pytest.mark.skipif(not QGIS_PROCESS.is_file(), reason="qgis_process is not installed")
def test_qgis_process_run_writes_geopackage(tmp_path, small_raster, golden_dir):
    env = install_plugin_zip(tmp_path, VENV_PYTHON)
    out = tmp_path / "found.gpkg"
    args = [f"--{k}={v}" for k, v in params(small_raster, golden_dir, OUTPUT=str(out)).items()]
    run = subprocess.run([str(QGIS_PROCESS), "run", "unravel:detect", *args], env=env,
                         capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "objects written" in run.stdout
    layer = QgsVectorLayer(str(out), "found", "ogr")
    assert layer.isValid()
    assert layer.renderer().type() == "categorizedSymbol"  # the class style stored in the file
    assert ENGINE_FIELDS <= set(layer.fields().names())
    assert layer.crs().authid() == "EPSG:32633"
    assert layer.featureCount() > 0


def test_runs_inside_a_processing_model(provider, small_raster, golden_dir):
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("find objects", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"),
                            QgsProcessingModelParameter("scene"))
    child = QgsProcessingModelChildAlgorithm("unravel:detect")
    child.setChildId("detect")
    (top,) = golden_data.frequent_classes(golden_dir, 1)
    fixed = params(small_raster, golden_dir, CLASSES=top)
    for name, value in fixed.items():
        if name not in ("INPUT", "OUTPUT"):
            child.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    output = QgsProcessingModelOutput("found")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"found": output})
    model.addChildAlgorithm(child)
    result = processing.run(model, {"scene": str(small_raster), "detect:found": "TEMPORARY_OUTPUT"})
    layer = result["detect:found"]
    assert isinstance(layer, QgsVectorLayer)  # processing.run hands temporary outputs back as layers
    assert layer.featureCount() > 0
    assert {f["class_name"] for f in layer.getFeatures()} == {top}
