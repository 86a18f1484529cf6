"""Detection tasks in a real headless QGIS: layers, cancel, and a worker killed mid-run.

One warm worker running the real engine (the reduced golden checkpoint, random weights) is
shared by the module, so the model loads once. The killed-worker test uses a scripted fake
engine instead, so that killing it costs nothing.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import golden_data
import numpy as np
import pytest
import rasterio
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from rasterio.transform import from_origin

from qgis_unravel.plugin import jobs, qgis_log, runtime, settings
from qgis_unravel.plugin.runner import Runner
from qgis_unravel.plugin.settings import Choices
from qgis_unravel.plugin.worker_client import WorkerClient

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
ENGINE_FIELDS = {"class_id", "class_name", "score", "angle_deg", "length_m", "width_m", "area_m2",
                 "model", "source"}

pytestmark = pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="needs the project venv (torch)")


def write_raster(path: Path, image: np.ndarray) -> Path:
    height, width = image.shape[:2]
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5)) as ds:
        ds.write(np.moveaxis(image, 2, 0))
    return path


@pytest.fixture(scope="module")
def golden_image(golden_dir) -> np.ndarray:
    return np.load(golden_dir / "reduced_model_io.npz")["image_rgb_uint8"]


@pytest.fixture(scope="module")
def small_raster(tmp_path_factory, golden_image) -> Path:
    return write_raster(tmp_path_factory.mktemp("rasters") / "small.tif", golden_image)


@pytest.fixture(scope="module")
def wide_raster(tmp_path_factory, golden_image) -> Path:
    return write_raster(tmp_path_factory.mktemp("rasters") / "wide.tif", np.tile(golden_image, (1, 6, 1)))


@pytest.fixture
def runner(qgis_iface, engine_client, qgis_new_project):
    qgis_iface.messageBar().clear_messages()
    return Runner(qgis_iface, client_factory=lambda: engine_client)


def choices_for(golden_dir: Path, **changes) -> Choices:
    score = golden_data.reduced_run(golden_dir)["score_thr"]  # the golden run's threshold
    base = Choices(model=str(golden_dir / "reduced_model.pth"), device="cpu", tile=256, overlap=0,
                   batch=1, score=score, iou=0.1, extent_mode="layer", output_mode="temporary")
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def raster_layer(path: Path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), path.stem, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def wait_for(runner: Runner, task, timeout_s: float = 240.0) -> None:
    ended = []
    runner.taskEnded.connect(lambda t: ended.append(t))
    deadline = time.monotonic() + timeout_s
    while task not in ended and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert task in ended, "the task did not finish in time"


def detect_in_view(plugin, timeout_s: float = 240.0):
    """Press "Detect in view" and wait for the task it starts (the worker's Python is checked off
    the main thread first, so the task appears after a while); returns the finished task."""
    plugin.action_view.trigger()
    deadline = time.monotonic() + 120
    while not plugin.runner.tasks and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    [task] = plugin.runner.tasks
    wait_for(plugin.runner, task, timeout_s)
    return task


def messages(runner: Runner, level) -> list[str]:
    return [text for lvl, text in runner.notifier.history if lvl == int(level)]


def result_layers() -> list[QgsVectorLayer]:
    layers = QgsProject.instance().mapLayers().values()
    return [layer for layer in layers if isinstance(layer, QgsVectorLayer)]


def test_task_adds_layer_with_crs_fields_and_count(runner, qgis_iface, golden_dir, small_raster):
    layer = raster_layer(small_raster)
    job = jobs.build_job(choices_for(golden_dir), layer, qgis_iface.mapCanvas())
    task = runner.start(job)
    wait_for(runner, task)
    assert task.error is None, str(task.error)
    [added] = result_layers()
    assert added.crs().authid() == "EPSG:32633"
    assert ENGINE_FIELDS <= set(added.fields().names())
    assert added.featureCount() == task.result["count"] > 0
    assert added.dataProvider().name() == "memory"  # a temporary layer
    assert added.renderer().type() == "categorizedSymbol"
    assert not os.path.exists(task.result["output"])  # the worker's file was cleaned up
    assert any("objects found" in m for m in messages(runner, Qgis.MessageLevel.Success))
    assert task.description().endswith("(done)")  # no stale "tiles 1/1, about 0 s left"


def test_file_output_keeps_only_chosen_classes(runner, qgis_iface, golden_dir, small_raster, tmp_path):
    layer = raster_layer(small_raster)
    out = tmp_path / "found.gpkg"
    chosen = golden_data.frequent_classes(golden_dir, 2)
    choices = choices_for(golden_dir, output_mode="file", output_path=str(out), output_layer="boxes",
                          classes=",".join(chosen))
    task = runner.start(jobs.build_job(choices, layer, qgis_iface.mapCanvas()))
    wait_for(runner, task)
    assert task.error is None, str(task.error)
    reread = QgsVectorLayer(f"{out}|layername=boxes", "reread", "ogr")
    assert reread.isValid()
    names = {feature["class_name"] for feature in reread.getFeatures()}
    assert names and names <= set(chosen)
    assert [lyr.name() for lyr in result_layers()] == ["boxes"]


def test_cancel_mid_run_keeps_partial_layer(runner, qgis_iface, golden_dir, wide_raster):
    layer = raster_layer(wide_raster)
    task = runner.start(jobs.build_job(choices_for(golden_dir), layer, qgis_iface.mapCanvas()))
    task.progressed.connect(lambda done, total, _text: task.cancel() if done >= 1 else None)
    wait_for(runner, task)
    assert task.error is None, str(task.error)
    assert task.partial
    [added] = result_layers()
    assert added.name().endswith("(partial)")
    assert added.featureCount() == task.result["count"]
    per_tile = golden_data.reduced_run(golden_dir)["n_dets"]
    assert task.result["count"] < 6 * per_tile  # stopped well before the six tiles were done
    assert any("Cancelled" in m for m in messages(runner, Qgis.MessageLevel.Warning))
    assert task.description().endswith("(cancelled, partial result kept)")


SLOW_FAKE = '''
import sys, time

def run_detect(spec, emit, cancel):
    sys.stderr.write("slow fake: about to be killed\\n")
    sys.stderr.flush()
    for done in range(10000):
        emit({"type": "progress", "done": done, "total": 10000, "eta_s": None, "stage": "tiles"})
        time.sleep(0.02)
    return 0

if __name__ == "__main__":
    from qgis_unravel.app.worker import main
    sys.exit(main(sys.argv[1:], run=run_detect))
'''


def test_killed_worker_gives_error_and_qgis_goes_on(runner, qgis_iface, golden_dir, small_raster,
                                                  tmp_path):
    (tmp_path / "slow_fake.py").write_text(textwrap.dedent(SLOW_FAKE))
    doomed = WorkerClient("/usr/bin/python3", script=str(tmp_path / "slow_fake.py"),
                          log=qgis_log.info)
    logged = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, _level: logged.append((tag, message)))
    layer = raster_layer(small_raster)
    killer = Runner(qgis_iface, client_factory=lambda: doomed)
    task = killer.start(jobs.build_job(choices_for(golden_dir), layer, qgis_iface.mapCanvas()))
    task.progressed.connect(lambda done, _t, _x: os.kill(doomed.pid, signal.SIGKILL) if done == 3 else None)
    wait_for(killer, task)
    assert task.result is None and task.error is not None and task.error.kind == "crash"
    critical = messages(killer, Qgis.MessageLevel.Critical)
    assert any("was killed" in m for m in critical), critical
    assert result_layers() == [] and killer.tasks == []
    QgsApplication.processEvents()
    assert ("UnravelNet", "slow fake: about to be killed") in logged  # stderr in the log panel
    # QGIS goes on: the same client starts a fresh worker for the next request.
    old_pid = doomed.pid
    assert doomed.start()["type"] == "hello" and doomed.pid != old_pid
    doomed.stop()


def test_detect_in_view_runs_on_the_canvas_extent(qgis_iface, engine_client, golden_dir, wide_raster,
                                                  monkeypatch, qgis_new_project, clean_choices):
    import qgis_unravel

    settings.save(choices_for(golden_dir))
    monkeypatch.setattr(runtime, "shutdown", lambda: None)  # keep the shared worker for later tests
    plugin = qgis_unravel.classFactory(qgis_iface)
    plugin.initGui()
    try:
        layer = raster_layer(wide_raster)
        qgis_iface.setActiveLayer(layer)
        canvas = qgis_iface.mapCanvas()
        canvas.setDestinationCrs(layer.crs())
        canvas.setExtent(QgsRectangle(500020, 5000000 - 60, 500060, 5000000 - 20))  # inside tile 1
        task = detect_in_view(plugin)
        assert task.error is None, str(task.error)
        visible = canvas.mapSettings().visibleExtent().intersect(layer.extent())
        aoi = [float(v) for v in task.job.request.aoi.split(",")]
        expected = [visible.xMinimum(), visible.yMinimum(), visible.xMaximum(), visible.yMaximum()]
        assert aoi == pytest.approx(expected)
        assert aoi[2] - aoi[0] < 128  # the view, not the 768 m wide raster
        assert task.result["tiles"] == 1
        [added] = result_layers()
        assert added.featureCount() == task.result["count"] > 0
        assert plugin.score_filter.layer is added  # the live score filter follows the new layer
        plugin.score_filter.slider.setValue(90)
        assert added.featureCount() < task.result["count"]
    finally:
        plugin.unload()


def test_non_file_layer_is_fetched_then_detected(runner, qgis_iface, golden_dir, small_raster):
    uri = (f"?crs=EPSG:32633&extent=500000,{5000000 - 128},500128,5000000&width=256&height=256"
           f"&formula=%22s@2%22&s:uri={small_raster}&s:provider=gdal")
    virtual = QgsRasterLayer(uri, "virtual green band", "virtualraster")
    assert virtual.isValid() and virtual.providerType() == "virtualraster"
    QgsProject.instance().addMapLayer(virtual)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(virtual.crs())
    canvas.setExtent(QgsRectangle(500010, 5000000 - 110, 500110, 5000000 - 10))
    job = jobs.build_job(choices_for(golden_dir, extent_mode="canvas"), virtual, canvas)
    assert job.export is not None
    task = runner.start(job)
    wait_for(runner, task)
    assert task.error is None, str(task.error)
    [added] = result_layers()
    assert added.crs().authid() == "EPSG:32633"
    assert added.featureCount() == task.result["count"]
    assert all(not os.path.exists(path) for path in job.cleanup)  # the temporary GeoTIFF is gone


CANCELLABLE_FAKE = '''
import sys, time

def run_detect(spec, emit, cancel):
    for done in range(10000):
        if cancel.is_set():
            emit({"type": "result", "output": "/nonexistent.gpkg", "layer": "x", "count": done,
                  "counts": {}, "partial": True, "model": "fake", "features": None})
            return 0
        emit({"type": "progress", "done": done, "total": 10000, "eta_s": None, "stage": "tiles"})
        time.sleep(0.02)
    return 0

if __name__ == "__main__":
    from qgis_unravel.app.worker import main
    sys.exit(main(sys.argv[1:], run=run_detect))
'''


def test_unloading_mid_run_cancels_and_adds_nothing(qgis_iface, golden_dir, small_raster, tmp_path,
                                                    qgis_new_project):
    (tmp_path / "cancellable_fake.py").write_text(textwrap.dedent(CANCELLABLE_FAKE))
    client = WorkerClient("/usr/bin/python3", script=str(tmp_path / "cancellable_fake.py"))
    try:
        qgis_iface.messageBar().clear_messages()
        leaving = Runner(qgis_iface, client_factory=lambda: client)
        layer = raster_layer(small_raster)
        task = leaving.start(jobs.build_job(choices_for(golden_dir), layer, qgis_iface.mapCanvas()))
        task.progressed.connect(lambda done, _t, _x: leaving.cancel_all() if done == 2 else None)
        wait_for(leaving, task, timeout_s=60)
        assert task.partial  # the worker stopped on the cancel...
        assert result_layers() == []  # ...but a plugin that is going away adds no layer
        assert messages(leaving, Qgis.MessageLevel.Warning) == []
    finally:
        client.stop()
