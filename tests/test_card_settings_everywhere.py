"""A model card's settings apply in every entry point: the same detections as `make demo`.

`make demo` runs the demo model on the demo scene with no explicit tiling; the card says tile 512,
overlap 128, score 0.3. The warm worker (with a RunSpec as JSON), the dialog, "Detect in view"
and the Processing algorithm (through `qgis_process`, from the installed plugin zip) each run the
same model on the same scene leaving every knob empty, and must find exactly the same objects.
Before the run spec, the dialog and Processing sent tile 1024 / overlap 200 / score 0.3 and
found fewer ships.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from test_plugin_support import install_plugin_zip
from test_plugin_task import detect_in_view, wait_for

from qgis_unravel.app.demo import DEMO_MODEL
from qgis_unravel.engine.spec import RunSpec
from qgis_unravel.paths import models_dir
from qgis_unravel.plugin import runtime, settings
from qgis_unravel.plugin.runner import Runner

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
CARD_SETTINGS = {"tile_size": 512, "overlap": 128, "score_threshold": 0.3, "nms_iou": 0.1,
                 "max_detections": 500}

pytestmark = [
    pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="needs the project venv (torch)"),
    pytest.mark.skipif(not (models_dir() / f"{DEMO_MODEL}.pth").is_file(), reason="no demo weights"),
]


def objects(layer: QgsVectorLayer) -> list[tuple]:
    """What was found, comparable across outputs: class, score and box centre, sorted."""
    assert layer.isValid()
    found = []
    for feature in layer.getFeatures():
        centre = feature.geometry().centroid().asPoint()
        found.append((feature["class_name"], round(feature["score"], 4),
                      round(centre.x(), 2), round(centre.y(), 2)))
    return sorted(found)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """`make demo` in a folder of its own: the scene and the detections it writes."""
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, "-m", "qgis_unravel.app.demo", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = objects(QgsVectorLayer(f"{out / 'detections.gpkg'}|layername=detections", "demo", "ogr"))
    assert len(expected) > 20 and any(name == "ship" for name, *_ in expected)
    return {"raster": out / "example_scene.tif", "objects": expected}


def assert_card_settings_ran(result: dict) -> None:
    ran = result["spec"]
    assert {key: ran[key] for key in CARD_SETTINGS} == CARD_SETTINGS


def test_worker_with_an_empty_spec_finds_what_the_demo_finds(demo, engine_client, tmp_path):
    out = tmp_path / "worker.gpkg"
    spec = RunSpec(input=str(demo["raster"]), output=str(out), layer="detections", model=DEMO_MODEL,
                   device="cpu")
    result = engine_client.run(spec)
    assert_card_settings_ran(result)
    assert objects(QgsVectorLayer(f"{out}|layername=detections", "w", "ogr")) == demo["objects"]


def test_dialog_with_the_model_chosen_finds_what_the_demo_finds(demo, engine_client, qgis_iface,
                                                                qgis_new_project, clean_choices):
    from qgis_unravel.plugin.dialog import DetectDialog

    layer = QgsRasterLayer(str(demo["raster"]), "demo scene", "gdal")
    QgsProject.instance().addMapLayer(layer)
    runner = Runner(qgis_iface, client_factory=lambda: engine_client)
    dialog = DetectDialog(qgis_iface, runner)
    try:
        dialog.layer_combo.setLayer(layer)
        dialog.set_model(DEMO_MODEL)
        dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
        assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (512, 128)  # the card's
        _choices, job = dialog.build_job()
        task = runner.start(job)
        wait_for(runner, task, timeout_s=900)
    finally:
        dialog.deleteLater()
    assert task.error is None, str(task.error)
    assert_card_settings_ran(task.result)
    [added] = [lyr for lyr in QgsProject.instance().mapLayers().values() if isinstance(lyr, QgsVectorLayer)]
    assert objects(added) == demo["objects"]


def test_detect_in_view_finds_what_the_demo_finds(demo, engine_client, qgis_iface, qgis_new_project,
                                                  clean_choices, monkeypatch):
    import qgis_unravel

    settings.save(settings.Choices(model=DEMO_MODEL, device="cpu"))  # no tiling chosen
    monkeypatch.setattr(runtime, "shutdown", lambda: None)
    plugin = qgis_unravel.classFactory(qgis_iface)
    plugin.initGui()
    try:
        layer = QgsRasterLayer(str(demo["raster"]), "demo scene", "gdal")
        QgsProject.instance().addMapLayer(layer)
        qgis_iface.setActiveLayer(layer)
        canvas = qgis_iface.mapCanvas()
        canvas.setDestinationCrs(layer.crs())
        canvas.setExtent(layer.extent())
        task = detect_in_view(plugin, timeout_s=900)
        assert task.error is None, str(task.error)
        assert_card_settings_ran(task.result)
        [added] = [lyr for lyr in QgsProject.instance().mapLayers().values()
                   if isinstance(lyr, QgsVectorLayer)]
        assert objects(added) == demo["objects"]
    finally:
        plugin.unload()


@pytest.mark.skipif(not QGIS_PROCESS.is_file(), reason="qgis_process is not installed")
def test_qgis_process_without_tiling_finds_what_the_demo_finds(demo, tmp_path):
    env = install_plugin_zip(tmp_path, VENV_PYTHON)
    plugin = tmp_path / "config" / "profiles" / "default" / "python" / "plugins" / "qgis_unravel"
    weights = plugin / "models" / f"{DEMO_MODEL}.pth"
    if not weights.is_file():  # the zip carries the cards; the demo weights may come separately
        shutil.copy(models_dir() / f"{DEMO_MODEL}.pth", weights)
    out = tmp_path / "processing.gpkg"
    args = [f"--INPUT={demo['raster']}", f"--MODEL={DEMO_MODEL}", "--DEVICE=1", f"--OUTPUT={out}"]
    run = subprocess.run([str(QGIS_PROCESS), "run", "unravel:detect", *args], env=env,
                         capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "tile 512, overlap 128, score 0.3" in run.stdout  # the resolved settings are logged
    assert objects(QgsVectorLayer(str(out), "p", "ogr")) == demo["objects"]
