"""The "Detect objects" dialog: every choice of a run, remembered between sessions.

Built in code (no .ui file) with scoped enums, so the same source runs on Qt5 and Qt6. The
dialog only collects choices and shows progress; the Runner owns the task and the layers.
"""

from __future__ import annotations

import os
import threading

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsVectorLayer
from qgis.gui import QgsCheckableComboBox, QgsFileWidget, QgsMapLayerComboBox, QgsMapToolExtent
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from . import jobs, model_list, runtime, settings
from .raster_source import effective_gsd
from .request import parse_classes
from .settings import Choices
from .worker_client import WorkerError

EXTENT_LABELS = {"layer": "Raster layer extent", "canvas": "Map canvas extent",
                 "drawn": "Drawn on the map", "polygons": "Polygons of a layer"}


def _raster_filter():
    return getattr(QgsMapLayerProxyModel, "RasterLayer", None) or QgsMapLayerProxyModel.Filter.RasterLayer


def _polygon_filter():
    return getattr(QgsMapLayerProxyModel, "PolygonLayer", None) or QgsMapLayerProxyModel.Filter.PolygonLayer


def model_entries() -> list[tuple[str, str]]:
    """(label, card id) for each model card; no cards is not an error."""
    return [(entry.label, entry.id) for entry in model_list.model_entries()]


def card_needing_download(model: str):
    """The model card of ``model`` when its weights can be downloaded and are not here yet."""
    try:
        from ..zoo import cache_status, get_card

        card = get_card(model)
    except Exception:  # a local checkpoint or an unknown name: the worker will say
        return None
    if card.weights.availability == "download" and cache_status(card) != "cached":
        return card
    return None


class DetectDialog(QDialog):
    devicesFound = pyqtSignal(object)  # noqa: N815 the worker's hello, from a helper thread

    def __init__(self, iface, runner, parent=None, notifier=None, on_setup=None):
        super().__init__(parent)
        self.iface = iface
        self.runner = runner
        self.notifier = notifier
        self.on_setup = on_setup
        self.entries = {entry.id: entry for entry in model_list.model_entries()}
        self.task = None
        self.download = None
        self.drawn = None
        self.drawn_crs = None
        self._previous_tool = None
        self.setWindowTitle("UnravelNet – detect oriented objects")
        self._build()
        self.set_choices(settings.load())
        self.devicesFound.connect(self._fill_devices)

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        form = QFormLayout()
        outer.addLayout(form)

        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(_raster_filter())
        self.layer_combo.setToolTip("The raster to search for objects (a file, or any layer QGIS "
                                    "draws: web and other layers are fetched at the map's resolution)")
        form.addRow("Raster layer", self.layer_combo)

        self.model_combo = QComboBox()
        self.model_combo.setToolTip("The detector to run. Models whose weights are not available "
                                    "are listed greyed out and cannot be chosen.")
        for entry in self.entries.values():
            self.model_combo.addItem(entry.label, entry.id)
            index = self.model_combo.count() - 1
            self.model_combo.setItemData(index, entry.summary or entry.title, Qt.ItemDataRole.ToolTipRole)
            if not entry.runnable:
                self.model_combo.model().item(index).setEnabled(False)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Use an mmrotate Oriented R-CNN checkpoint file (.pth) instead")
        self.browse_button.clicked.connect(self.browse_model)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        form.addRow("Model", self._row(self.model_combo, self.browse_button))

        self.device_combo = QComboBox()
        self.device_combo.addItem("Auto", "auto")
        self.device_combo.addItem("CPU", "cpu")
        self.device_combo.setToolTip("Where the network runs: Auto takes the first GPU when the worker "
                                     "has CUDA, else the CPU; GPUs are listed once the worker answers")
        form.addRow("Device", self.device_combo)

        self.tile_spin = self._spin(64, 8192, 32, " px")
        self.overlap_spin = self._spin(0, 4096, 16, " px")
        self.batch_spin = self._spin(0, 256, 1, "")
        self.batch_spin.setSpecialValueText("Automatic")  # 0: from the GPU's free memory
        self.tile_spin.setToolTip("Side of the square windows the raster is cut into, in pixels "
                                  "of the processing resolution")
        self.overlap_spin.setToolTip("How much neighbouring windows overlap, so objects on a window's "
                                     "edge are found whole")
        self.batch_spin.setToolTip("Windows run through the network together: larger is faster on a "
                                   "GPU and needs more memory; Automatic chooses from the GPU's free "
                                   "memory")
        form.addRow("Tile size", self.tile_spin)
        form.addRow("Overlap", self.overlap_spin)
        form.addRow("Batch size", self.batch_spin)
        self.gsd_spin = QDoubleSpinBox()
        self.gsd_spin.setRange(0.0, 1000.0)
        self.gsd_spin.setDecimals(3)
        self.gsd_spin.setSingleStep(0.05)
        self.gsd_spin.setSuffix(" m/px")
        self.gsd_spin.setSpecialValueText("Raster's own")
        self.gsd_spin.setToolTip("Ground resolution the raster is resampled to before detection "
                                 "(metres per pixel). The default is the model's training resolution "
                                 "from its card; \"Raster's own\" (0) keeps the raster's pixels.")
        form.addRow("Processing resolution", self.gsd_spin)
        self.score_spin = self._dspin()
        self.iou_spin = self._dspin()
        self.score_spin.setToolTip("Objects scored below this are dropped (0–1)")
        self.iou_spin.setToolTip("Boxes of one class overlapping more than this (intersection over "
                                 "union) are merged into one, across windows")
        form.addRow("Score threshold", self.score_spin)
        form.addRow("NMS IoU", self.iou_spin)
        # Run knobs follow the chosen model's recommendation until the user edits them.
        self._knobs = {"tile": (self.tile_spin, "tile_size"), "overlap": (self.overlap_spin, "overlap"),
                       "batch": (self.batch_spin, "batch_size"),
                       "score": (self.score_spin, "score_threshold"), "iou": (self.iou_spin, "nms_iou")}
        self._follow = dict.fromkeys(self._knobs, True)
        self._showing_model_values = False
        for key, (spin, _field) in self._knobs.items():
            spin.valueChanged.connect(lambda *_args, key=key: self._knob_edited(key))
        self.model_values_button = QPushButton("Use the model's settings")
        self.model_values_button.clicked.connect(self.use_model_settings)
        self.model_values_button.setToolTip("Forget your edits of tile, overlap, batch, score and IoU: "
                                            "use the chosen model's own settings (its card)")
        form.addRow("", self.model_values_button)

        self.classes_combo = QgsCheckableComboBox()
        self.classes_combo.setDefaultText("All classes")
        self.classes_combo.setToolTip("Keep only the checked classes; none checked keeps all. A "
                                      "checkpoint file's classes are listed after its first run.")
        form.addRow("Classes to keep", self.classes_combo)

        self.extent_combo = QComboBox()
        for key, label in EXTENT_LABELS.items():
            self.extent_combo.addItem(label, key)
        self.extent_combo.setToolTip("The part of the raster to search")
        self.draw_button = QPushButton("Draw")
        self.draw_button.setToolTip("Drag a rectangle on the map to set the extent")
        self.draw_button.clicked.connect(self.start_drawing)
        self.polygon_combo = QgsMapLayerComboBox()
        self.polygon_combo.setFilters(_polygon_filter())
        self.polygon_combo.setToolTip("Only objects inside the polygons of this layer are kept")
        self.extent_combo.currentIndexChanged.connect(self._extent_changed)
        form.addRow("Extent", self._row(self.extent_combo, self.draw_button))
        form.addRow("", self.polygon_combo)

        outer.addWidget(self._output_box())
        outer.addWidget(self._worker_box())

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setToolTip("Progress of the run (windows done of all)")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the run is doing, or what needs changing before it can run")
        outer.addWidget(self.progress)
        outer.addWidget(self.status)

        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.run_button.setToolTip("Start the detection in the background (QGIS stays usable)")
        self.cancel_button.setToolTip("Stop after the current batch; objects found so far are kept "
                                      "in a layer marked (partial)")
        self.close_button.setToolTip("Close the dialog; a running detection goes on")
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.run_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        outer.addLayout(buttons)

    def _output_box(self) -> QGroupBox:
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.temp_radio = QRadioButton("Temporary layer")
        self.file_radio = QRadioButton("GeoPackage file")
        group = QButtonGroup(box)
        group.addButton(self.temp_radio)
        group.addButton(self.file_radio)
        self.file_widget = QgsFileWidget()
        self.file_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.file_widget.setFilter("GeoPackage (*.gpkg)")
        self.layer_name_edit = QLineEdit()
        self.open_check = QCheckBox("Open the output when done")
        self.labels_check = QCheckBox("Label boxes with class and score")
        self.temp_radio.setToolTip("Keep the result in memory only (lost when QGIS closes unless saved)")
        self.file_radio.setToolTip("Write the result to a GeoPackage file")
        self.file_widget.setToolTip("The GeoPackage to write; if it already holds the layer, you are "
                                    "asked before it is replaced")
        self.layer_name_edit.setToolTip("Name of the layer inside the GeoPackage")
        self.open_check.setToolTip("Add the written layer to the project when the run ends")
        self.labels_check.setToolTip("Write each box's class and score on the map")
        form.addRow(self._row(self.temp_radio, self.file_radio))
        form.addRow("File", self.file_widget)
        form.addRow("Layer name", self.layer_name_edit)
        form.addRow(self.open_check)
        form.addRow(self.labels_check)
        self.file_radio.toggled.connect(self._output_changed)
        return box

    def _worker_box(self) -> QGroupBox:
        box = QGroupBox("Worker")
        box.setCheckable(False)
        form = QFormLayout(box)
        self.python_widget = QgsFileWidget()
        self.python_widget.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.python_widget.lineEdit().setPlaceholderText("auto-detect a Python with torch")
        self.idle_spin = self._spin(0, 86400, 60, " s")
        self.idle_spin.setToolTip("Keep the model loaded this long after a run (0: until QGIS exits)")
        self.python_widget.setToolTip("The Python that runs the detector (it needs PyTorch). Empty: the "
                                      "one \"Set up PyTorch…\" made, else one found automatically.")
        self.setup_button = QPushButton("Set up PyTorch…")
        self.setup_button.setToolTip("Install PyTorch for UnravelNet in a private environment "
                                     "(no shell, no administrator rights)")
        self.setup_button.clicked.connect(self._setup)
        form.addRow("Python", self._row(self.python_widget, self.setup_button))
        form.addRow("Keep warm", self.idle_spin)
        return box

    def _setup(self) -> None:
        if self.on_setup is not None:
            self.on_setup()

    @staticmethod
    def _row(*widgets) -> QHBoxLayout:
        row = QHBoxLayout()
        for widget in widgets:
            row.addWidget(widget)
        return row

    @staticmethod
    def _spin(low: int, high: int, step: int, suffix: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setSuffix(suffix)
        return spin

    @staticmethod
    def _dspin() -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.05)
        spin.setDecimals(2)
        return spin

    # -- choices --------------------------------------------------------------------------------
    def set_model(self, value: str) -> None:
        entry = self.entries.get(value)
        if entry is not None and not entry.runnable:
            value = model_list.default_model(list(self.entries.values()), "")
        index = self.model_combo.findData(value)
        if index < 0 and value:
            self.model_combo.addItem(value, value)
            index = self.model_combo.count() - 1
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self._model_changed()

    def set_choices(self, c: Choices) -> None:
        self.set_model(model_list.default_model(list(self.entries.values()), c.model))
        index = self.device_combo.findData(c.device)
        if index < 0:
            self.device_combo.addItem(c.device, c.device)
            index = self.device_combo.count() - 1
        self.device_combo.setCurrentIndex(index)
        for key, (spin, _field) in self._knobs.items():
            value = getattr(c, key)
            self._follow[key] = value is None
            if value is not None:
                self._showing_model_values = True  # a remembered value, not an edit
                spin.setValue(value)
                self._showing_model_values = False
        self._show_model_values()
        self.classes_combo.setCheckedItems(parse_classes(c.classes))
        self.extent_combo.setCurrentIndex(max(0, self.extent_combo.findData(c.extent_mode)))
        self.temp_radio.setChecked(c.output_mode != "file")
        self.file_radio.setChecked(c.output_mode == "file")
        self.file_widget.setFilePath(c.output_path)
        self.layer_name_edit.setText(c.output_layer)
        self.open_check.setChecked(c.open_output)
        self.labels_check.setChecked(c.labels)
        self.python_widget.setFilePath(c.worker_python)
        self.idle_spin.setValue(c.idle_s)
        self._extent_changed()
        self._output_changed()

    def choices(self) -> Choices:
        return Choices(
            model=str(self.model_combo.currentData() or ""), device=str(self.device_combo.currentData()),
            tile=self._knob("tile"), overlap=self._knob("overlap"), batch=self._knob("batch"),
            score=self._knob("score"), iou=self._knob("iou"),
            classes=",".join(self.classes_combo.checkedItems()),
            extent_mode=str(self.extent_combo.currentData()), gsd=round(self.gsd_spin.value(), 4) or None,
            output_mode="file" if self.file_radio.isChecked() else "temporary",
            output_path=self.file_widget.filePath(), output_layer=self.layer_name_edit.text().strip(),
            open_output=self.open_check.isChecked(), labels=self.labels_check.isChecked(),
            worker_python=self.python_widget.filePath().strip(), idle_s=self.idle_spin.value())

    def _knob(self, key: str):
        """A run knob's choice: None while it follows the model (the worker resolves it)."""
        if self._follow[key]:
            return None
        value = self._knobs[key][0].value()
        if key == "batch" and value == 0:
            return None  # "Automatic": the engine sizes batches to the device
        return round(value, 4) if isinstance(value, float) else value

    def _knob_edited(self, key: str) -> None:
        if not self._showing_model_values:
            self._follow[key] = False

    def use_model_settings(self) -> None:
        """Forget the edits: every run knob shows (and sends nothing but) the model's default."""
        self._follow = dict.fromkeys(self._knobs, True)
        self._show_model_values()

    def _show_model_values(self) -> None:
        """Show the chosen model's recommended settings in the knobs that follow the model."""
        recommended = jobs.recommended_spec(str(self.model_combo.currentData() or ""))
        self._showing_model_values = True
        try:
            for key, (spin, field) in self._knobs.items():
                value = getattr(recommended, field)  # batch_size None: automatic, shown as 0
                if self._follow[key]:
                    spin.setValue(0 if value is None else value)
                spin.setToolTip(f"The model's setting: {'automatic' if value is None else value}")
        finally:
            self._showing_model_values = False

    def _model_changed(self, *_args) -> None:
        self._show_model_values()
        checked = self.classes_combo.checkedItems()
        classes = jobs.known_classes(str(self.model_combo.currentData() or ""))
        self.classes_combo.clear()
        self.classes_combo.addItems(classes)
        self.classes_combo.setCheckedItems([name for name in checked if name in classes])
        entry = self.entries.get(str(self.model_combo.currentData() or ""))
        self.gsd_spin.setValue(entry.gsd if entry is not None and entry.gsd else 0.0)

    def _extent_changed(self, *_args) -> None:
        mode = self.extent_combo.currentData()
        self.draw_button.setEnabled(mode == "drawn")
        self.polygon_combo.setEnabled(mode == "polygons")

    def _output_changed(self, *_args) -> None:
        to_file = self.file_radio.isChecked()
        self.file_widget.setEnabled(to_file)
        self.layer_name_edit.setEnabled(to_file)

    def browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "mmrotate checkpoint", "",
                                              "PyTorch checkpoints (*.pth *.pt);;All files (*)")
        if path:
            self.set_model(path)

    # -- devices (asynchronous: the worker imports torch) ----------------------------------------
    def set_engine_checking(self) -> None:
        if self.task is None:
            self.status.setText("Checking the worker's Python…")

    def set_engine_ready(self, ready: bool) -> None:
        self.run_button.setEnabled(self.task is None and self.download is None)
        self.setup_button.setDefault(not ready)
        if self.task is not None:
            return
        if ready:
            self.status.setText("Ready.")
            threading.Thread(target=self._ask_devices, daemon=True).start()
        else:
            self.status.setText("PyTorch is not set up yet: press \"Set up PyTorch…\" below.")

    def _ask_devices(self) -> None:
        try:
            hello = runtime.client().start(timeout_s=120)
        except WorkerError:
            return
        self.devicesFound.emit(hello)

    def _fill_devices(self, hello: dict) -> None:
        current = self.device_combo.currentData()
        for device in hello.get("devices", []):
            value = f"cuda:{device['index']}"
            if self.device_combo.findData(value) < 0:
                label = f"GPU {device['index']}: {device['name']} ({device['free_mb']} MiB free)"
                self.device_combo.insertItem(self.device_combo.count() - 1, label, value)
        index = self.device_combo.findData(current)
        if index >= 0:
            self.device_combo.setCurrentIndex(index)

    # -- drawing an extent ------------------------------------------------------------------------
    def start_drawing(self) -> None:
        canvas = self.iface.mapCanvas()
        self._previous_tool = canvas.mapTool()
        self.draw_tool = QgsMapToolExtent(canvas)
        self.draw_tool.extentChanged.connect(self._drawn)
        canvas.setMapTool(self.draw_tool)
        self.hide()

    def _drawn(self, rect) -> None:
        canvas = self.iface.mapCanvas()
        self.drawn = rect
        self.drawn_crs = canvas.mapSettings().destinationCrs()
        if self._previous_tool is not None:
            canvas.setMapTool(self._previous_tool)
        else:
            canvas.unsetMapTool(self.draw_tool)
        self.status.setText(f"Extent drawn: {rect.width():.1f} x {rect.height():.1f} map units")
        self.show()

    # -- running --------------------------------------------------------------------------------
    def build_job(self):
        choices = self.choices()
        layer = self.layer_combo.currentLayer()
        choices.gsd = effective_gsd(choices.gsd, layer)
        taken = self.runner.layer_names() if hasattr(self.runner, "layer_names") else set()
        return choices, jobs.build_job(choices, layer, self.iface.mapCanvas(), self.drawn,
                                       self.drawn_crs, self.polygon_combo.currentLayer(),
                                       existing_layers=taken)

    def _may_write(self, job) -> bool:
        """Ask before a run replaces a layer already in the GeoPackage; on yes, the project's
        layers showing the old data are removed first (they would change under the user)."""
        request = job.request
        if job.temporary or not os.path.isfile(request.output):
            return True
        if not existing_gpkg_layer(request.output, request.layer):
            return True
        shown = project_layers_of(request.output, request.layer)
        text = (f"{request.output} already holds a layer \"{request.layer}\".")
        if shown:
            text += (" It is in the project as " + ", ".join(f"\"{layer.name()}\"" for layer in shown)
                     + "; that layer will be removed from the project and replaced by the new result.")
        answer = QMessageBox.question(self, "Replace the existing result?", text + "\n\nReplace it?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        if shown:
            QgsProject.instance().removeMapLayers([layer.id() for layer in shown])
        return True

    def run(self) -> None:
        try:
            choices, job = self.build_job()
        except jobs.JobError as exc:
            self.status.setText(str(exc))
            return
        settings.save(choices)
        if not self._may_write(job):
            self.status.setText("Not run: choose another file or layer name.")
            return
        if self._download_first(choices.model):
            return
        self.task = self.runner.start(job)
        self.task.progressed.connect(self._progress)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.ended.connect(self._ended)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("Starting the worker…")

    def _download_first(self, model: str) -> bool:
        """Start the weights' download (QGIS network settings apply) when a card needs it.

        The run starts by itself once the download succeeds; True means "wait for it".
        """
        card = card_needing_download(model)
        if card is None:
            return False
        from .download_task import start_download

        self.status.setText(f"Downloading the weights of {card.title} first…")
        self.run_button.setEnabled(False)
        self.download = start_download(card, parent=self, on_done=self._downloaded)
        if self.download is not None:
            self.download.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        return True  # when nothing started, _downloaded has already said why

    def _downloaded(self, ok: bool, text: str) -> None:
        self.download = None
        self.run_button.setEnabled(True)
        if ok:
            self.run()
        else:
            self.status.setText(text)

    def cancel(self) -> None:
        if self.download is not None:
            self.download.cancel()
        if self.task is not None:
            self.status.setText("Cancelling after the current batch…")
            self.task.cancel()

    def _progress(self, done: int, total: int, text: str) -> None:
        self.status.setText(model_list.for_qgis_user(text))

    def _ended(self, task) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.task = None
        if task.result is not None:
            self.progress.setValue(100)
            self.status.setText(("Cancelled, partial result kept. " if task.partial else "Done. ")
                                + f"{task.result.get('count', 0)} objects.")
        elif task.error is not None:
            self.status.setText("Cancelled." if task.error.kind == "cancelled"
                                else model_list.for_qgis_user(str(task.error)))

    def closeEvent(self, event):  # noqa: N802 (Qt name)
        settings.save(self.choices())
        super().closeEvent(event)


def existing_gpkg_layer(path: str, layer_name: str) -> bool:
    """Whether the GeoPackage ``path`` already has a layer called ``layer_name``."""
    probe = QgsVectorLayer(f"{path}|layername={layer_name}", "probe", "ogr")
    return probe.isValid()


def project_layers_of(path: str, layer_name: str) -> list:
    """The project's layers that show ``layer_name`` of the file ``path``."""
    wanted = os.path.normcase(os.path.abspath(path))
    found = []
    for layer in QgsProject.instance().mapLayers().values():
        source = layer.source().split("|")
        if os.path.normcase(os.path.abspath(source[0])) != wanted:
            continue
        names = [part.split("=", 1)[1] for part in source[1:] if part.startswith("layername=")]
        if not names or names[0] == layer_name:
            found.append(layer)
    return found
