"""The QGIS plugin object: actions, toolbar, Raster menu, Processing provider.

Everything heavy (the dialog, Processing, the worker) is imported or started on first use, so
loading the plugin costs QGIS nothing and works when torch is missing: the engine check runs
when the user asks for a detection, and its answer goes to the message bar.
"""

from __future__ import annotations

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtGui import QIcon

try:  # Qt5 keeps QAction in QtWidgets, Qt6 in QtGui
    from qgis.PyQt.QtWidgets import QAction
except ImportError:  # pragma: no cover (Qt6)
    from qgis.PyQt.QtGui import QAction

from .. import paths

MENU = "&UnravelNet"
TITLE = "UnravelNet"


def icon(name: str) -> QIcon:
    return QIcon(str(paths.resources_dir() / "icons" / name))


class UnravelPlugin:
    """Created by ``classFactory``; QGIS calls initGui/initProcessing and unload."""

    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar = None
        self.provider = None
        self.runner = None
        self.dialog = None
        self.score_filter = None
        self.notifier = None
        self.engine_check = None
        self.setup_dialog = None
        self.diagnostics = None

    # -- Processing ----------------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 (QGIS name)
        from .processing import provider  # (this import form lets QGIS unload the subpackage)

        if self.provider is None:
            self.provider = provider.UnravelProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    # -- GUI -----------------------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802 (QGIS name)
        from . import runtime
        from .engine_check import EngineCheck
        from .live_filter import ScoreFilter
        from .messages import Notifier
        from .runner import Runner

        self.initProcessing()
        runtime.set_keep_warm(True)
        self.notifier = Notifier(self.iface)
        self.engine_check = EngineCheck()
        self.runner = Runner(self.iface, notifier=self.notifier)
        self.toolbar = self.iface.addToolBar(TITLE)
        self.toolbar.setObjectName("UnravelNetToolbar")
        self.action_detect = self._add_action("unravel.svg", "Detect objects…", self.show_dialog,
                                              "Detect oriented objects in a raster layer")
        self.action_view = self._add_action("unravel_view.svg", "Detect in view", self.detect_in_view,
                                            "Detect objects in the current map view with the warm model")
        self.action_diagnostics = self._add_action("unravel_diagnostics.svg", "Diagnostics…",
                                                   self.show_diagnostics,
                                                   "A Markdown report to paste into a bug report",
                                                   toolbar=False)
        self.action_setup = self._add_action("unravel.svg", "Set up PyTorch…", self.show_setup,
                                             "Install PyTorch for UnravelNet in a private environment "
                                             "(no shell, no administrator rights)", toolbar=False)
        self.score_filter = ScoreFilter(self.iface, self.toolbar)
        self.runner.layerReady.connect(self.score_filter.track_layer)

    def _add_action(self, icon_name: str, text: str, slot, tip: str, toolbar: bool = True) -> QAction:
        action = QAction(icon(icon_name), text, self.iface.mainWindow())
        action.setObjectName("UnravelNet_" + text.strip("…").replace(" ", "_"))
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        if toolbar:
            self.toolbar.addAction(action)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)
        return action

    def unload(self) -> None:
        """Remove every trace: actions, menu entries, toolbar, provider, tasks and worker."""
        from . import runtime

        if self.runner is not None:
            self.runner.cancel_all()
        if self.notifier is not None:
            self.notifier.clear()
        for window in (self.setup_dialog, self.diagnostics):
            if window is not None:
                window.close()
                window.deleteLater()
        self.setup_dialog = self.diagnostics = None
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        if self.score_filter is not None:
            self.score_filter.remove()
            self.score_filter = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            if self.toolbar is not None:
                self.toolbar.removeAction(action)
            action.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        runtime.set_keep_warm(False)
        runtime.shutdown()

    # -- actions -------------------------------------------------------------------------------
    def message(self, text: str, level=Qgis.MessageLevel.Info, duration: int = 8, action=None) -> None:
        self.notifier.push(text, level, duration, action)

    def with_engine(self, then) -> None:
        """Run ``then()`` once the worker's Python is known to work; otherwise say what to do,
        with a "Set up PyTorch…" button. The probe runs in a helper thread (no UI freeze)."""
        from . import qgis_log
        from .messages import Action

        def answered(probe) -> None:
            if self.dialog is not None:
                self.dialog.set_engine_ready(probe.ok)
            if probe.ok:
                then()
                return
            text = probe.explain()
            qgis_log.warning(text)
            self.message(text, Qgis.MessageLevel.Warning, 0,
                         Action("Set up PyTorch…", self.show_setup, "Install PyTorch for UnravelNet now"))

        self.engine_check.request(answered)

    def show_dialog(self) -> None:
        from .dialog import DetectDialog

        if self.dialog is None:
            self.dialog = DetectDialog(self.iface, self.runner, self.iface.mainWindow(),
                                       notifier=self.notifier, on_setup=self.show_setup)
        self.dialog.set_engine_checking()
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        self.with_engine(lambda: None)

    def detect_in_view(self) -> None:
        from . import jobs

        layer = jobs.view_raster_layer(self.iface)
        if layer is None:
            self.message("Select a raster layer in the Layers panel first.", Qgis.MessageLevel.Warning)
            return
        self.with_engine(lambda: self._detect_in_view(layer))

    def _detect_in_view(self, layer) -> None:
        from . import jobs, settings

        choices = settings.load()
        choices.extent_mode = "canvas"
        choices.output_mode = "temporary"
        try:
            job = jobs.build_job(choices, layer, self.iface.mapCanvas(),
                                 existing_layers=self.runner.layer_names())
        except jobs.JobError as exc:
            self.message(str(exc), Qgis.MessageLevel.Warning)
            return
        self.runner.start(job)
        self.message(f"Detecting in the current view of {layer.name()}…", Qgis.MessageLevel.Info, 3)

    def show_diagnostics(self) -> None:
        from .diagnostics import DiagnosticsDialog

        if self.diagnostics is not None:
            self.diagnostics.close()
            self.diagnostics.deleteLater()
        self.diagnostics = DiagnosticsDialog(self.iface.mainWindow())
        self.diagnostics.show()

    def show_setup(self) -> None:
        from .torch_env_task import TorchEnvDialog

        if self.setup_dialog is None:
            self.setup_dialog = TorchEnvDialog(self.iface.mainWindow())
            self.setup_dialog.finishedSetup.connect(self._setup_finished)
        self.setup_dialog.show()
        self.setup_dialog.raise_()
        self.setup_dialog.activateWindow()

    def _setup_finished(self, ok: bool) -> None:
        if ok:
            self.message("PyTorch is set up: UnravelNet is ready to detect objects.",
                         Qgis.MessageLevel.Success)
            if self.dialog is not None:
                from . import settings

                self.dialog.python_widget.setFilePath(settings.load().worker_python)
                self.with_engine(lambda: None)
