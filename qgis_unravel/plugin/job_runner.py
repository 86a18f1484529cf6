"""Running a long job (training, evaluation) for Processing in its own worker-Python process.

The job (``python -m qgis_unravel.app.qgis_job``) speaks the worker protocol on stdout; this module
turns its events into Processing feedback (progress, log lines) and its cancel button into a
``cancel`` request, after which a training run stops at the end of the iteration with a
checkpoint to resume from. No torch is imported here.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections import deque
from typing import Callable, Optional

from ..worker import protocol
from . import runtime
from .interpreter import hidden_window_flags, worker_env

JOB_MODULE = "qgis_unravel.app.qgis_job"


class JobError(RuntimeError):
    """The job failed; ``kind`` is "user" (fix the input) or "internal"."""

    def __init__(self, message: str, kind: str = "internal"):
        super().__init__(message)
        self.kind = kind


def _pump(stream, lines: queue.Queue[Optional[str]]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_job(
    command: str,
    args: list[str],
    on_event: Callable[[dict], None],
    is_cancelled: Callable[[], bool],
    python: Optional[str] = None,
) -> dict:
    """Run ``command`` with CLI ``args`` in the worker Python; the ``result`` event."""
    if python is None:
        probe = runtime.worker_python()
        if not probe.ok:
            raise JobError(probe.explain(), "user")
        python = probe.python
    proc = subprocess.Popen(
        [python, "-u", "-m", JOB_MODULE, command, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace", env=worker_env(), **hidden_window_flags(),
    )
    lines: queue.Queue[Optional[str]] = queue.Queue()
    errors: deque = deque(maxlen=40)
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    result, failure, asked_to_stop = None, None, False
    try:
        while True:
            if is_cancelled() and not asked_to_stop:
                asked_to_stop = True
                try:
                    proc.stdin.write(protocol.encode({"cmd": "cancel"}))
                    proc.stdin.flush()
                except OSError:
                    pass
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                message = protocol.decode(line)
            except protocol.ProtocolError:
                on_event({"type": "log", "message": line.rstrip()})
                continue
            if message.get("type") == "result":
                result = message
            elif message.get("type") == "error":
                failure = message
            else:
                on_event(message)
    finally:
        code = proc.wait()
    if failure is not None:
        raise JobError(str(failure.get("message")), str(failure.get("kind", "internal")))
    if result is None:
        tail = "".join(errors).strip()[-2000:]
        raise JobError(f"the {command} job ended (exit code {code}) without a result. {tail}")
    return result
