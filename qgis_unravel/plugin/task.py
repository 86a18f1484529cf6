"""The background QgsTask of one detection.

``run`` (a worker thread) prepares the raster and drives the worker process; it never touches
layers or the project. ``finished`` (the main thread) builds the results layer. Cancelling asks
the worker to stop after its current batch; what it found until then comes back as a partial
result, which becomes a layer named "... (partial)".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..engine.spec import RunSpec
from . import qgis_log
from .raster_source import ExportSpec, SourceError
from .worker_client import WorkerClient, WorkerError


@dataclass
class Job:
    """One run, fully resolved on the main thread before the task starts."""

    request: RunSpec
    title: str
    export: ExportSpec | None = None
    temporary: bool = True
    known_classes: list[str] = field(default_factory=list)
    open_output: bool = True
    labels: bool = False
    cleanup: list[str] = field(default_factory=list)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


class DetectTask(QgsTask):
    """Runs one Job; ``result``, ``error`` and ``partial`` are read after it ends."""

    progressed = pyqtSignal(int, int, str)  # done, total, human text (queued to the main thread)
    ended = pyqtSignal(object)  # the task itself, on the main thread, when it has finished

    def __init__(self, job: Job, client_factory: Callable[[], WorkerClient]):
        super().__init__(f"UnravelNet: {job.title}", QgsTask.Flag.CanCancel)
        self.job = job
        self._client_factory = client_factory
        self.result: dict | None = None
        self.error: WorkerError | None = None
        self.started_at = 0.0
        self.elapsed_s = 0.0

    @property
    def partial(self) -> bool:
        return bool(self.result and self.result.get("partial"))

    def run(self) -> bool:  # worker thread
        self.started_at = time.monotonic()
        try:
            if self.job.export is not None:
                self.progressed.emit(0, 0, "fetching the raster")
                self.job.request = replace(self.job.request, input=self.job.export.write())
                self.job.cleanup.append(self.job.request.input)
            if self.isCanceled():
                return False
            client = self._client_factory()
            self.result = client.run(self.job.request, self._on_event, self.isCanceled)
        except WorkerError as exc:
            self.error = exc
        except SourceError as exc:
            self.error = WorkerError(str(exc), "user")
        except Exception as exc:  # never let a bug escape a task thread silently
            qgis_log.critical(f"unexpected error in the detection task: {type(exc).__name__}: {exc}")
            self.error = WorkerError(f"unexpected error: {exc}", "internal")
        finally:
            self.elapsed_s = time.monotonic() - self.started_at
        return self.result is not None

    def _on_event(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "progress":
            done, total = int(message.get("done", 0)), int(message.get("total", 0))
            if total > 0:
                self.setProgress(100.0 * done / total)
            text = f"{message.get('stage', 'tiles')} {done}/{total}"
            eta = eta_text(message.get("eta_s"))
            self.progressed.emit(done, total, text + (f", about {eta} left" if eta else ""))
        elif kind == "warning":
            qgis_log.warning(str(message.get("message")))
            self.progressed.emit(-1, -1, str(message.get("message")))
        elif kind == "log":
            qgis_log.info(str(message.get("message")))

    def finished(self, ok: bool) -> None:  # main thread
        for path in self.job.cleanup:
            try:
                os.remove(path)
            except OSError:
                pass
        if not ok and self.error is None and self.isCanceled():
            self.error = WorkerError("cancelled before the worker started", "cancelled")
        self.ended.emit(self)
