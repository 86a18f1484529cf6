"""Is the worker's Python able to run the engine? Asked off the main thread.

Probing an interpreter imports torch in a subprocess (seconds), so it never runs on QGIS's main
thread: callers pass a callback that gets the answer (a ``ProbeResult``) on the main thread.
A cached success answers at once.
"""

from __future__ import annotations

import threading
from typing import Callable

from qgis.PyQt.QtCore import QObject, pyqtSignal

from . import runtime
from .interpreter import ProbeResult

Callback = Callable[[ProbeResult], None]


class EngineCheck(QObject):
    answered = pyqtSignal(object)  # the ProbeResult, queued to the main thread

    def __init__(self, parent=None):
        super().__init__(parent)
        self._waiting: list[Callback] = []
        self._running = False
        self.answered.connect(self._deliver)

    def request(self, callback: Callback) -> None:
        """Call ``callback(probe)`` on the main thread once the probe has answered."""
        self._waiting.append(callback)
        if not self._running:
            self._running = True
            threading.Thread(target=self._probe, name="unravel-probe", daemon=True).start()

    def busy(self) -> bool:
        return self._running

    def _probe(self) -> None:  # helper thread
        try:
            probe = runtime.worker_python()
        except Exception as exc:  # a bug must still answer, or the UI waits forever
            probe = ProbeResult("?", False, error=f"{type(exc).__name__}: {exc}")
        self.answered.emit(probe)

    def _deliver(self, probe: ProbeResult) -> None:  # main thread
        self._running = False
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback(probe)
