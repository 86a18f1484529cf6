"""The dialog's choices reach the engine, are remembered, and every extent/source kind resolves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.PyQt.QtWidgets import QWidget
from rasterio.transform import from_origin

from qgis_unravel.engine.spec import RunSpec
from qgis_unravel.plugin import jobs, live_filter, settings
from qgis_unravel.plugin.dialog import DetectDialog
from qgis_unravel.plugin.runner import Runner

ORIGIN_X, ORIGIN_Y, PIXEL = 500000.0, 5000000.0, 0.5


@pytest.fixture(scope="module")
def raster_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rasters") / "scene.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(ORIGIN_X, ORIGIN_Y, PIXEL, PIXEL)) as ds:
        ds.write(rng.integers(0, 255, (3, 128, 128), dtype=np.uint8))
    return path


@pytest.fixture
def clean_settings():
    QgsSettings().remove("qgis_unravel")
    yield
    QgsSettings().remove("qgis_unravel")


@pytest.fixture
def raster(qgis_new_project, raster_path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(raster_path), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture
def dialog(qgis_iface, clean_settings, raster):
    dlg = DetectDialog(qgis_iface, Runner(qgis_iface, client_factory=lambda: None))
    dlg.layer_combo.setLayer(raster)
    yield dlg
    dlg.close()
    dlg.deleteLater()


def fill(dlg: DetectDialog, model: str) -> None:
    dlg.set_model(model)
    dlg.device_combo.setCurrentIndex(dlg.device_combo.findData("cpu"))
    dlg.tile_spin.setValue(512)
    dlg.overlap_spin.setValue(64)
    dlg.batch_spin.setValue(4)
    dlg.score_spin.setValue(0.45)
    dlg.iou_spin.setValue(0.2)


def test_dialog_values_reach_the_run_spec(dialog, tmp_path):
    fill(dialog, "/models/my_checkpoint.pth")
    dialog.file_radio.setChecked(True)
    dialog.file_widget.setFilePath(str(tmp_path / "out.gpkg"))
    dialog.layer_name_edit.setText("ships")
    _choices, job = dialog.build_job()
    spec = job.request
    assert isinstance(spec, RunSpec) and RunSpec.from_json(spec.to_json()) == spec  # what the worker gets
    assert (spec.tile_size, spec.overlap, spec.batch_size) == (512, 64, 4)
    assert spec.score_threshold == pytest.approx(0.45)
    assert spec.nms_iou == pytest.approx(0.2)
    assert spec.aoi is None  # whole layer
    assert spec.resolve().model_name == "my_checkpoint"
    assert spec.device == "cpu" and spec.model == "/models/my_checkpoint.pth"
    assert spec.input == dialog.layer_combo.currentLayer().source()
    assert spec.output == str(tmp_path / "out.gpkg") and spec.layer == "ships"
    assert not job.temporary


def test_choosing_a_model_shows_its_card_settings_and_sends_none_of_them(dialog):
    dialog.set_model("demo-unravelnet-synthetic")
    assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (512, 128)
    assert dialog.score_spin.value() == pytest.approx(0.3)
    _choices, job = dialog.build_job()
    assert (job.request.tile_size, job.request.overlap, job.request.score_threshold) == (None, None, None)
    dialog.set_model("legnet-s-orcnn-fair1m")  # the values follow the model until edited
    assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (1024, 500)
    dialog.tile_spin.setValue(768)  # an edit: explicit from now on, whatever the model
    dialog.set_model("demo-unravelnet-synthetic")
    assert (dialog.tile_spin.value(), dialog.overlap_spin.value()) == (768, 128)
    _choices, job = dialog.build_job()
    assert (job.request.tile_size, job.request.overlap) == (768, None)
    dialog.use_model_settings()
    assert dialog.tile_spin.value() == 512 and dialog.choices().tile is None


def test_an_untouched_dialog_runs_the_demo_cards_settings(dialog):
    """Nothing changed: the preselected demo model, and its card's tiling and thresholds once the
    worker resolves the spec (bench/heldout_map_dialog.py measures the accuracy of that run)."""
    from qgis_unravel.app.demo import DEMO_MODEL
    from qgis_unravel.engine.spec import ModelDefaults
    from qgis_unravel.zoo import get_card

    _choices, job = dialog.build_job()
    sent = RunSpec.from_json(job.request.to_json())  # what the worker receives
    assert sent.model == DEMO_MODEL
    card = get_card(DEMO_MODEL)
    ran = sent.resolve(ModelDefaults.from_card(card))
    assert (ran.tile_size, ran.overlap) == (card.tiling.tile_size, card.tiling.overlap) == (512, 128)
    assert ran.score_threshold == pytest.approx(card.thresholds.score)
    assert ran.nms_iou == pytest.approx(card.thresholds.nms_iou)
    assert ran.max_detections == card.thresholds.max_detections


def test_choices_are_remembered(qgis_iface, dialog, tmp_path):
    checkpoint = tmp_path / "remember_me.pth"
    checkpoint.write_bytes(b"not read by the dialog")
    fill(dialog, str(checkpoint))
    dialog.extent_combo.setCurrentIndex(dialog.extent_combo.findData("canvas"))
    dialog.labels_check.setChecked(True)
    dialog.close()  # saves
    again = DetectDialog(qgis_iface, dialog.runner)
    try:
        remembered = again.choices()
        assert remembered == dialog.choices()
        assert remembered.model == str(checkpoint) and remembered.tile == 512
        assert remembered.extent_mode == "canvas" and remembered.labels
        assert settings.load().score == pytest.approx(0.45)
    finally:
        again.deleteLater()


def test_model_cards_fill_the_model_list_and_classes(dialog):
    combo = dialog.model_combo
    cards = [combo.itemData(i) for i in range(combo.count())]
    assert cards[0] == "demo-unravelnet-synthetic"  # preselected: it runs offline at once
    assert dialog.choices().model == "demo-unravelnet-synthetic"
    assert dialog.gsd_spin.value() == pytest.approx(0.15)  # the card's resolution is the default
    unpublished = cards.index("unravelnet-t-orcnn-dota10")
    assert "weights not published" in combo.itemText(unpublished)
    assert not combo.model().item(unpublished).isEnabled()  # listed, but cannot be chosen
    dialog.set_model("unravelnet-t-orcnn-dota10")
    assert dialog.choices().model == "demo-unravelnet-synthetic"
    classes = [dialog.classes_combo.itemText(i) for i in range(dialog.classes_combo.count())]
    assert "plane" in classes and "ship" in classes
    dialog.classes_combo.setCheckedItems(["ship", "plane"])
    assert set(dialog.choices().classes.split(",")) == {"ship", "plane"}


def test_a_remembered_model_that_cannot_run_is_not_preselected(qgis_iface, clean_settings, raster):
    settings.save(settings.Choices(model="unravelnet-s-orcnn-dota10"))
    again = DetectDialog(qgis_iface, Runner(qgis_iface, client_factory=lambda: None))
    try:
        assert again.choices().model == "demo-unravelnet-synthetic"
    finally:
        again.deleteLater()


def test_processing_resolution_reaches_the_engine(dialog):
    dialog.gsd_spin.setValue(0.3)
    _choices, job = dialog.build_job()
    assert job.request.gsd == pytest.approx(0.3)
    dialog.gsd_spin.setValue(PIXEL)  # the raster is already at that resolution: nothing to resample
    _choices, job = dialog.build_job()
    assert job.request.gsd is None
    dialog.gsd_spin.setValue(0.0)  # "Raster's own": no resampling
    _choices, job = dialog.build_job()
    assert job.request.gsd is None


def test_every_widget_has_a_tooltip(dialog):
    widgets = {name: widget for name, widget in vars(dialog).items() if isinstance(widget, QWidget)}
    assert len(widgets) >= 25
    assert [name for name, widget in widgets.items() if not widget.toolTip().strip()] == []


def test_each_run_gets_its_own_layer_name(dialog, raster):
    QgsProject.instance().addMapLayer(QgsVectorLayer("Point", "demo-unravelnet-synthetic – scene", "memory"))
    _choices, job = dialog.build_job()
    assert job.title == "demo-unravelnet-synthetic – scene (2)"


def existing_result(path: Path, name: str) -> QgsVectorLayer:
    from qgis.core import QgsVectorFileWriter

    source = QgsVectorLayer("Polygon?crs=EPSG:32633&field=score:double", name, "memory")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", name
    QgsVectorFileWriter.writeAsVectorFormatV2(source, str(path), source.transformContext(), options)
    layer = QgsVectorLayer(f"{path}|layername={name}", "my ships", "ogr")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.mark.parametrize("answer", ["No", "Yes"])
def test_an_existing_output_is_only_replaced_when_the_user_says_so(dialog, monkeypatch, tmp_path, answer):
    from qgis.PyQt.QtWidgets import QMessageBox

    out = tmp_path / "ships.gpkg"
    shown = existing_result(out, "ships")
    shown_id = shown.id()
    asked = []

    def question(_parent, _title, text, *_args):
        asked.append(text)
        return getattr(QMessageBox.StandardButton, answer)

    monkeypatch.setattr(QMessageBox, "question", question)
    started = []
    monkeypatch.setattr(dialog.runner, "start", lambda job: started.append(job) or FakeTask())
    dialog.file_radio.setChecked(True)
    dialog.file_widget.setFilePath(str(out))
    dialog.layer_name_edit.setText("ships")
    dialog.run()
    assert len(asked) == 1 and "already holds a layer \"ships\"" in asked[0] and "my ships" in asked[0]
    if answer == "No":
        assert started == [] and "Not run" in dialog.status.text()
        assert shown_id in QgsProject.instance().mapLayers()  # untouched
    else:
        assert len(started) == 1
        assert shown_id not in QgsProject.instance().mapLayers()  # it would change under the user


class FakeTask:
    """What the dialog connects to when a run starts (the run itself is not the point here)."""

    class _Signal:
        def connect(self, _slot):
            pass

    progressed = progressChanged = ended = _Signal()


def test_canvas_extent_becomes_bbox_in_raster_crs(qgis_iface, raster, clean_settings):
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(QgsRectangle(ORIGIN_X + 10, ORIGIN_Y - 40, ORIGIN_X + 30, ORIGIN_Y - 20))
    choices = settings.Choices(model="m.pth", extent_mode="canvas")
    job = jobs.build_job(choices, raster, canvas)
    minx, miny, maxx, maxy = (float(v) for v in job.request.aoi.split(","))
    visible = canvas.mapSettings().visibleExtent()
    assert minx == pytest.approx(max(visible.xMinimum(), ORIGIN_X))
    assert maxy == pytest.approx(min(visible.yMaximum(), ORIGIN_Y))
    assert minx >= ORIGIN_X and maxx <= ORIGIN_X + 64 and miny >= ORIGIN_Y - 64


def test_drawn_extent_outside_raster_is_refused(qgis_iface, raster):
    choices = settings.Choices(model="m.pth", extent_mode="drawn")
    with pytest.raises(jobs.JobError, match="draw the extent"):
        jobs.build_job(choices, raster, qgis_iface.mapCanvas())
    far = QgsRectangle(0, 0, 10, 10)
    with pytest.raises(jobs.JobError, match="does not overlap"):
        jobs.build_job(choices, raster, qgis_iface.mapCanvas(), far, raster.crs())


def test_polygons_become_an_aoi_file(qgis_iface, raster):
    polygons = QgsVectorLayer("Polygon?crs=EPSG:32633", "areas", "memory")
    feature = QgsFeature()
    ring = [QgsPointXY(ORIGIN_X + 5, ORIGIN_Y - 5), QgsPointXY(ORIGIN_X + 20, ORIGIN_Y - 5),
            QgsPointXY(ORIGIN_X + 20, ORIGIN_Y - 25)]
    feature.setGeometry(QgsGeometry.fromPolygonXY([ring]))
    polygons.dataProvider().addFeatures([feature])
    choices = settings.Choices(model="m.pth", extent_mode="polygons")
    job = jobs.build_job(choices, raster, qgis_iface.mapCanvas(), polygons=polygons)
    assert job.request.aoi.endswith(".gpkg") and os.path.isfile(job.request.aoi)
    written = QgsVectorLayer(job.request.aoi, "aoi", "ogr")
    assert written.featureCount() == 1 and written.crs().authid() == "EPSG:32633"
    assert job.request.aoi in job.cleanup
    os.remove(job.request.aoi)


def test_non_file_layer_is_exported_for_the_view(qgis_iface, raster_path, qgis_new_project, tmp_path):
    uri = (f"?crs=EPSG:32633&extent={ORIGIN_X},{ORIGIN_Y - 64},{ORIGIN_X + 64},{ORIGIN_Y}"
           f"&width=128&height=128&formula=%22s@1%22&s:uri={raster_path}&s:provider=gdal")
    virtual = QgsRasterLayer(uri, "virtual", "virtualraster")
    assert virtual.isValid() and virtual.providerType() != "gdal"
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(virtual.crs())
    canvas.setExtent(QgsRectangle(ORIGIN_X, ORIGIN_Y - 32, ORIGIN_X + 32, ORIGIN_Y))
    job = jobs.build_job(settings.Choices(model="m.pth", extent_mode="canvas"), virtual, canvas)
    assert job.export is not None and job.request.input == "" and job.request.aoi is None
    path = job.export.write(str(tmp_path))
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 32633
        assert ds.width == job.export.width and ds.height == job.export.height
        assert ds.bounds.left == pytest.approx(job.export.extent.xMinimum())


def test_score_slider_filters_results_live(qgis_iface):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&field=score:double&field=class_name:string",
                           "found", "memory")
    features = []
    for score in (0.1, 0.35, 0.6, 0.9):
        feature = QgsFeature(layer.fields())
        feature.setAttributes([score, "ship"])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    assert live_filter.apply_threshold(layer, 0.5)
    assert layer.featureCount() == 2
    from qgis.PyQt.QtWidgets import QToolBar

    toolbar = QToolBar()
    slider = live_filter.ScoreFilter(qgis_iface, toolbar)
    slider.track_layer(layer)
    assert slider.slider.value() == 50  # the slider shows the layer's own filter
    slider.slider.setValue(30)
    assert layer.featureCount() == 3
    slider.slider.setValue(0)
    assert layer.featureCount() == 4
    slider.remove()


def test_run_downloads_missing_card_weights_first(dialog, monkeypatch):
    from qgis_unravel.plugin import download_task
    from qgis_unravel.zoo import cache_status, get_card

    card = get_card("legnet-t-orcnn-dota10")
    if cache_status(card) == "cached":
        pytest.skip("the weights are already in this machine's cache")
    asked = []

    def fake_start(card, parent=None, on_done=None, **_kwargs):
        asked.append(card.id)
        on_done(False, f"Licence of {card.id} not accepted; nothing was downloaded.")
        return None

    monkeypatch.setattr(download_task, "start_download", fake_start)
    started = []
    monkeypatch.setattr(dialog.runner, "start", lambda job: started.append(job))
    dialog.set_model("legnet-t-orcnn-dota10")
    dialog.run()
    assert asked == ["legnet-t-orcnn-dota10"]
    assert started == []  # no run without weights
    assert "not accepted" in dialog.status.text()
    assert dialog.run_button.isEnabled()


def test_gpus_reported_by_the_worker_are_offered_by_name(dialog):
    hello = {"type": "hello", "devices": [{"index": 0, "name": "NVIDIA H100", "free_mb": 79000},
                                          {"index": 1, "name": "NVIDIA L4", "free_mb": 22000}]}
    dialog._fill_devices(hello)
    labels = [dialog.device_combo.itemText(i) for i in range(dialog.device_combo.count())]
    values = [dialog.device_combo.itemData(i) for i in range(dialog.device_combo.count())]
    assert values == ["auto", "cuda:0", "cuda:1", "cpu"]
    assert labels[1] == "GPU 0: NVIDIA H100 (79000 MiB free)"
    dialog._fill_devices(hello)  # a second answer adds nothing twice
    assert dialog.device_combo.count() == 4


def test_first_gpu_is_the_engines_plain_cuda():
    from qgis_unravel.plugin.request import build_spec

    spec = build_spec(source="a.tif", output="b.gpkg", model="m.pth", device="cuda:0")
    assert spec.device == "cuda" and RunSpec.from_json(spec.to_json()).device == "cuda"
    assert build_spec(source="a.tif", output="b.gpkg", model="m.pth", device="cuda:1").device == "cuda:1"


def test_a_bad_choice_gets_the_specs_own_message():
    from qgis_unravel.plugin.request import SpecError, build_spec

    with pytest.raises(SpecError, match=r"overlap \(300\) must be smaller than the tile size \(256\)"):
        build_spec(source="a.tif", output="b.gpkg", model="m.pth", tile=256, overlap=300)


def test_automatic_batch_size_leaves_the_choice_to_the_engine(dialog):
    fill(dialog, "/models/my_checkpoint.pth")
    dialog.use_model_settings()
    assert dialog.batch_spin.text() == "Automatic"
    dialog.batch_spin.setValue(0)
    dialog.device_combo.addItem("GPU 1", "cuda:1")
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cuda:1"))
    _choices, job = dialog.build_job()
    assert job.request.batch_size is None and job.request.device == "cuda:1"
