"""The "Detect objects" dialog: every choice of a run, remembered between sessions.

Built in code (no .ui file) with scoped enums, so the same source runs on Qt5 and Qt6. The
dialog only collects choices and shows progress; the Runner owns the task and the layers.
"""

from __future__ import annotations

import threading

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsCheckableComboBox, QgsFileWidget, QgsMapLayerComboBox, QgsMapToolExtent
from qgis.PyQt.QtCore import pyqtSignal
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
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from . import jobs, runtime, settings
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
    try:
        from ..zoo import list_cards

        cards = list_cards()
    except Exception:  # a broken card must not stop the dialog
        return []
    return [(card.title, card.id) for card in cards]


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

    def __init__(self, iface, runner, parent=None):
        super().__init__(parent)
        self.iface = iface
        self.runner = runner
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
        form.addRow("Raster layer", self.layer_combo)

        self.model_combo = QComboBox()
        for label, value in model_entries():
            self.model_combo.addItem(label, value)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self.browse_model)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        form.addRow("Model", self._row(self.model_combo, self.browse_button))

        self.device_combo = QComboBox()
        self.device_combo.addItem("Auto", "auto")
        self.device_combo.addItem("CPU", "cpu")
        form.addRow("Device", self.device_combo)

        self.tile_spin = self._spin(64, 8192, 32, " px")
        self.overlap_spin = self._spin(0, 4096, 16, " px")
        self.batch_spin = self._spin(1, 256, 1, "")
        form.addRow("Tile size", self.tile_spin)
        form.addRow("Overlap", self.overlap_spin)
        form.addRow("Batch size", self.batch_spin)
        self.score_spin = self._dspin()
        self.iou_spin = self._dspin()
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
        form.addRow("", self.model_values_button)

        self.classes_combo = QgsCheckableComboBox()
        self.classes_combo.setDefaultText("All classes")
        form.addRow("Classes to keep", self.classes_combo)

        self.extent_combo = QComboBox()
        for key, label in EXTENT_LABELS.items():
            self.extent_combo.addItem(label, key)
        self.draw_button = QPushButton("Draw")
        self.draw_button.clicked.connect(self.start_drawing)
        self.polygon_combo = QgsMapLayerComboBox()
        self.polygon_combo.setFilters(_polygon_filter())
        self.extent_combo.currentIndexChanged.connect(self._extent_changed)
        form.addRow("Extent", self._row(self.extent_combo, self.draw_button))
        form.addRow("", self.polygon_combo)

        outer.addWidget(self._output_box())
        outer.addWidget(self._worker_box())

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        outer.addWidget(self.progress)
        outer.addWidget(self.status)

        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
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
        form.addRow("Python", self.python_widget)
        form.addRow("Keep warm", self.idle_spin)
        return box

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
        index = self.model_combo.findData(value)
        if index < 0 and value:
            self.model_combo.addItem(value, value)
            index = self.model_combo.count() - 1
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self._model_changed()

    def set_choices(self, c: Choices) -> None:
        self.set_model(c.model)
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
            extent_mode=str(self.extent_combo.currentData()),
            output_mode="file" if self.file_radio.isChecked() else "temporary",
            output_path=self.file_widget.filePath(), output_layer=self.layer_name_edit.text().strip(),
            open_output=self.open_check.isChecked(), labels=self.labels_check.isChecked(),
            worker_python=self.python_widget.filePath().strip(), idle_s=self.idle_spin.value())

    def _knob(self, key: str):
        """A run knob's choice: None while it follows the model (the worker resolves it)."""
        if self._follow[key]:
            return None
        value = self._knobs[key][0].value()
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
                if self._follow[key]:
                    spin.setValue(getattr(recommended, field))
                spin.setToolTip(f"The model's setting: {getattr(recommended, field)}")
        finally:
            self._showing_model_values = False

    def _model_changed(self, *_args) -> None:
        self._show_model_values()
        checked = self.classes_combo.checkedItems()
        classes = jobs.known_classes(str(self.model_combo.currentData() or ""))
        self.classes_combo.clear()
        self.classes_combo.addItems(classes)
        self.classes_combo.setCheckedItems([name for name in checked if name in classes])

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
    def set_engine_ready(self, ready: bool) -> None:
        self.run_button.setEnabled(True)
        if ready:
            threading.Thread(target=self._ask_devices, daemon=True).start()
        else:
            self.status.setText("The worker Python cannot run the engine yet: see the message bar.")

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
        return choices, jobs.build_job(choices, layer, self.iface.mapCanvas(), self.drawn,
                                       self.drawn_crs, self.polygon_combo.currentLayer())

    def run(self) -> None:
        try:
            choices, job = self.build_job()
        except jobs.JobError as exc:
            self.status.setText(str(exc))
            return
        settings.save(choices)
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
        self.status.setText(text)

    def _ended(self, task) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.task = None
        if task.result is not None:
            self.progress.setValue(100)
            self.status.setText(("Cancelled, partial result kept. " if task.partial else "Done. ")
                                + f"{task.result.get('count', 0)} objects.")
        elif task.error is not None:
            self.status.setText(str(task.error))

    def closeEvent(self, event):  # noqa: N802 (Qt name)
        settings.save(self.choices())
        super().closeEvent(event)
