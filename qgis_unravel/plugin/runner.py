"""Start detection tasks and turn their outcome into layers and messages (main thread)."""

from __future__ import annotations

import os
from typing import Callable

from qgis.core import Qgis, QgsApplication, QgsProject
from qgis.PyQt.QtCore import QObject, pyqtSignal

from . import model_list, qgis_log, results, runtime, settings
from .messages import Notifier
from .task import DetectTask, Job
from .worker_client import WorkerClient

TITLE = "UnravelNet"


class Runner(QObject):
    """Keeps running tasks alive (Python must hold them) and reports how each ended."""

    layerReady = pyqtSignal(object)  # noqa: N815 (Qt naming) the QgsVectorLayer just added
    taskEnded = pyqtSignal(object)  # noqa: N815 the DetectTask, after its layer/message

    def __init__(self, iface, client_factory: Callable[[], WorkerClient] | None = None,
                 notifier: Notifier | None = None):
        super().__init__()
        self.iface = iface
        self.notifier = notifier or Notifier(iface)
        self._client_factory = client_factory or runtime.client
        self.tasks: list[DetectTask] = []
        self.closed = False  # after the plugin unloads, late results add no layers

    def start(self, job: Job) -> DetectTask:
        task = DetectTask(job, self._client_factory)
        task.ended.connect(self._on_ended)
        task.progressed.connect(lambda _done, _total, text, t=task: t.describe(text))
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel_all(self) -> None:
        """Cancel every running task; used on unload, so nothing is added afterwards."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()

    def _message(self, text: str, level=Qgis.MessageLevel.Info, duration: int = 8) -> None:
        self.notifier.push(text, level, duration)

    def layer_names(self) -> set[str]:
        """Names of the layers in the project and of runs still going (for unique names)."""
        names = {layer.name() for layer in QgsProject.instance().mapLayers().values()}
        return names | {task.job.title for task in self.tasks}

    def _on_ended(self, task: DetectTask) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        try:
            if self.closed:
                pass
            elif task.result is not None:
                self._add_result(task)
            elif task.error is not None:
                self._report_error(task)
        finally:
            self.taskEnded.emit(task)

    def _add_result(self, task: DetectTask) -> None:
        job, result = task.job, task.result
        settings.remember_classes(job.request.model, results.model_classes(result))
        try:
            layer = results.build_layer(result, job.temporary, job.title, job.request.classes,
                                        job.known_classes, job.labels)
        except results.ResultError as exc:
            qgis_log.critical(str(exc))
            self._message(str(exc), Qgis.MessageLevel.Critical, 0)
            return
        count = layer.featureCount()
        if job.temporary:
            self._remove_quietly(str(result["output"]))
        if job.open_output or job.temporary:
            QgsProject.instance().addMapLayer(layer)
            self.layerReady.emit(layer)
        warned = (f" {len(task.warnings)} warning(s): see the UnravelNet tab of the log panel."
                  if task.warnings else "")
        if task.partial:
            self._message(f"Cancelled: the {count} objects found before the cancel are in the layer "
                          f"'{layer.name()}'.{warned}", Qgis.MessageLevel.Warning)
        else:
            where = "" if job.temporary else f" Saved in {result['output']}."
            self._message(f"{count} objects found in {task.elapsed_s:.0f} s: layer '{layer.name()}'."
                          f"{where}{warned}", Qgis.MessageLevel.Success)

    def _report_error(self, task: DetectTask) -> None:
        error = task.error
        if error.kind == "cancelled":
            self._message("Detection cancelled.", Qgis.MessageLevel.Info)
            return
        qgis_log.critical(f"detection failed ({error.kind}): {error}")
        level = Qgis.MessageLevel.Warning if error.kind == "user" else Qgis.MessageLevel.Critical
        self._message(model_list.for_qgis_user(str(error)), level, 0)

    @staticmethod
    def _remove_quietly(path: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except OSError:
                pass
