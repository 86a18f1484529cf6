"""Long jobs for QGIS (training, evaluation) in their own process, speaking the worker protocol.

``python -m qgis_unravel.app.qgis_job train|evaluate ARGS...`` takes the same arguments as the
``qgis-unravel`` commands and writes JSON lines on stdout (``worker/protocol.py``): ``progress``
per training iteration, ``log`` for every line the command prints, then one ``result`` (the
checkpoint, or the evaluation numbers) or one ``error``. A ``{"cmd": "cancel"}`` line on stdin
stops a training run after the current iteration, with a checkpoint it can resume from.
The QGIS plugin starts it with the worker's Python, so QGIS itself never imports torch.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from ..worker import protocol

Emit = Callable[[Dict[str, Any]], None]


class JobEvents:
    """What a command reports while it runs (the hooks ``train_cli`` looks for on ``args``)."""

    def __init__(self, emit: Emit, cancel: threading.Event) -> None:
        self.emit = emit
        self.cancel = cancel
        self.started = time.monotonic()
        self.finished: Optional[Dict[str, Any]] = None

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def step(self, done: int, total: int, record: Dict[str, float]) -> None:
        elapsed = time.monotonic() - self.started
        eta = elapsed / max(done, 1) * (total - done)
        self.emit(protocol.progress(done, total, eta, f"iterations (loss {record.get('loss', 0):.3f})"))

    def result(self, **fields: Any) -> None:
        self.finished = {"type": "result", **fields}


class LogLines(io.TextIOBase):
    """A text stream whose complete lines become ``log`` events (what the commands print)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text.replace("\r", "\n")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip():
                self._emit({"type": "log", "message": line})
        return len(text)


def _watch_stdin(stream: IO[str], cancel: threading.Event) -> None:
    for line in stream:
        try:
            if json.loads(line).get("cmd") == "cancel":
                cancel.set()
        except (ValueError, AttributeError):
            continue


def parser() -> argparse.ArgumentParser:
    from . import train_cli

    p = argparse.ArgumentParser(prog="python -m qgis_unravel.app.qgis_job")
    sub = p.add_subparsers(dest="command", required=True)
    train_cli.add_train(sub)
    train_cli.add_evaluate(sub)
    return p


def run(argv: Sequence[str], out: IO[str], stdin: Optional[IO[str]] = None) -> int:
    """Run one job, reporting on ``out``; the exit code (0 done, 1 user error, 2 internal)."""
    from . import train_cli

    lock = threading.Lock()

    def emit(message: Dict[str, Any]) -> None:
        with lock:
            protocol.emit(out, message)

    cancel = threading.Event()
    if stdin is not None:
        threading.Thread(target=_watch_stdin, args=(stdin, cancel), daemon=True).start()
    saved = sys.stdout
    sys.stdout = LogLines(emit)
    try:
        try:
            args = parser().parse_args(list(argv))
        except SystemExit as exc:
            emit(protocol.error(f"bad job arguments: {' '.join(argv)}", "internal"))
            return int(exc.code or 2)
        args.events = events = JobEvents(emit, cancel)
        command = {"train": train_cli.run_train, "evaluate": train_cli.run_evaluate}[args.command]
        try:
            command(args)
        except train_cli.USER_ERRORS as exc:
            emit(protocol.error(str(exc), "user"))
            return 1
        except Exception as exc:  # a bug: the whole story in the log, one line in the error
            emit({"type": "log", "message": traceback.format_exc()})
            emit(protocol.error(f"internal error: {type(exc).__name__}: {exc}", "internal"))
            return 2
        emit(events.finished or {"type": "result", "output": None})
        return 0
    finally:
        sys.stdout = saved


def main(argv: Optional[List[str]] = None) -> int:
    out = sys.stdout
    return run(sys.argv[1:] if argv is None else argv, out, sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
