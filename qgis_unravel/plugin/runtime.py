"""The one warm worker of this QGIS process, shared by the dialog, "Detect in view" and Processing.

Finding the interpreter is slow (it imports torch once), so the answer is cached and the
client is reused until the user changes the interpreter or the idle time.
"""

from __future__ import annotations

import threading

from . import qgis_log, settings
from .interpreter import ProbeResult, find_worker_python
from .worker_client import WorkerClient, WorkerError

_lock = threading.Lock()
_client: WorkerClient | None = None
_last_probe: ProbeResult | None = None
_keep_warm = False


class EngineMissing(WorkerError):
    """The worker interpreter cannot run the engine; the message says how to fix it."""

    def __init__(self, probe: ProbeResult):
        super().__init__(probe.explain(), "user")
        self.probe = probe


def worker_python(choices: settings.Choices | None = None) -> ProbeResult:
    """Probe (once) the interpreter the settings point at, or the auto-detected one."""
    global _last_probe
    choices = choices or settings.load()
    _last_probe = find_worker_python(choices.worker_python or None)
    return _last_probe


def last_probe() -> ProbeResult | None:
    return _last_probe


def client(choices: settings.Choices | None = None) -> WorkerClient:
    """The shared client, created on first use; raise EngineMissing when torch is not there."""
    global _client
    choices = choices or settings.load()
    probe = worker_python(choices)
    if not probe.ok:
        raise EngineMissing(probe)
    with _lock:
        changed = _client is not None and (_client.python != probe.python or _client.idle_s != choices.idle_s)
        if changed and not _client.busy():  # a running detection keeps its worker until it ends
            _client.stop()
            _client = None
        if _client is None:
            _client = WorkerClient(probe.python, idle_s=choices.idle_s, log=qgis_log.info)
        return _client


def set_keep_warm(value: bool) -> None:
    """The GUI plugin keeps the worker between runs; headless Processing stops it after each."""
    global _keep_warm
    _keep_warm = bool(value)


def keep_warm() -> bool:
    return _keep_warm


def current_client() -> WorkerClient | None:
    """The client if one was made (for diagnostics), without probing anything."""
    return _client


def shutdown() -> None:
    """Stop the worker (plugin unload, QGIS exit)."""
    global _client
    with _lock:
        if _client is not None:
            _client.stop()
        _client = None
