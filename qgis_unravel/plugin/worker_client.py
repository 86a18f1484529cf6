"""The plugin's side of the warm worker: start it, send requests, read events.

The worker is a separate process so that a crash, an out-of-memory error or a kill never takes
QGIS down: every failure becomes a ``WorkerError`` with a message a user can act on, and the
worker's stderr goes to the log callback (the "UnravelNet" tab of the QGIS log panel). This
module imports neither QGIS nor torch; it is used from QgsTask threads and Processing alike.
"""

from __future__ import annotations

import collections
import queue
import subprocess
import threading
import time
import uuid
from typing import IO, Callable

from ..engine.spec import RunSpec
from ..worker import protocol
from .interpreter import hidden_window_flags, worker_env

LogSink = Callable[[str], None]
EventSink = Callable[[dict], None]

WORKER_MODULE = "qgis_unravel.app.worker"
START_TIMEOUT_S = 180.0
CANCEL_GRACE_S = 60.0
_EXITED = {"type": "_exited"}


class WorkerError(RuntimeError):
    """A run that did not produce a result; ``kind`` is user, internal, crash, oom or cancelled."""

    def __init__(self, message: str, kind: str = "internal"):
        super().__init__(message)
        self.kind = kind


def is_out_of_memory(text: str) -> bool:
    lowered = text.lower()
    return "out of memory" in lowered or "outofmemoryerror" in lowered


OOM_ADVICE = ("The GPU ran out of memory. Try a smaller batch size or tile size, close other "
              "programs using the GPU, or choose the CPU device.")


class WorkerClient:
    """One warm worker process; ``run`` is serialised so one detection runs at a time."""

    def __init__(self, python: str, idle_s: float = 600.0, log: LogSink | None = None,
                 script: str | None = None, env: dict[str, str] | None = None):
        """``script``: a Python file to start instead of the worker module (tests start one
        that calls the worker's ``main`` with a fake run function)."""
        self.python = python
        self.idle_s = idle_s
        self._log = log or (lambda _msg: None)
        self._script = script
        self._env = env
        self._proc: subprocess.Popen | None = None
        self._hello: dict | None = None
        self._hello_ready = threading.Event()
        self._queues: dict[str, queue.Queue] = {}
        self._state = threading.Lock()
        self._run_lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self.last_error = ""

    # -- process life ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def busy(self) -> bool:
        """A detection is running (the client must not be replaced or stopped now)."""
        return self._run_lock.locked()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        target = [self._script] if self._script else ["-m", WORKER_MODULE]
        return [self.python, "-u", *target, "--idle", f"{self.idle_s:g}"]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> dict:
        """Start the worker if it is not running and return its ``hello`` event."""
        with self._state:
            if not self.alive():
                self._spawn()
        if not self._hello_ready.wait(timeout_s):
            if not self.alive():
                raise self._exit_error()
            raise WorkerError(f"the worker did not answer within {timeout_s:.0f} s", "internal")
        if self._hello is None:
            raise self._exit_error()
        return self._hello

    def _spawn(self) -> None:
        """Start a fresh process; the caller holds ``_state``."""
        self._hello = None
        self._hello_ready.clear()
        self._stderr.clear()
        try:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
                env=worker_env(self._env), **hidden_window_flags(),
            )
        except OSError as exc:
            self._proc = None
            self._hello_ready.set()
            raise WorkerError(f"could not start the worker Python {self.python}: {exc}", "user") from exc
        self._log(f"worker started: pid {self._proc.pid}, {' '.join(self.command())}")
        threading.Thread(target=self._read_stdout, args=(self._proc,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True).start()

    def hello(self) -> dict | None:
        """The last ``hello`` of a running worker (None before it answered)."""
        return self._hello if self.alive() else None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit; kill it when it does not."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self._send({"cmd": "shutdown"})
        except WorkerError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    # -- reading --------------------------------------------------------------------------------
    def _read_stdout(self, proc: subprocess.Popen) -> None:
        stream: IO[str] = proc.stdout  # type: ignore[assignment]
        for line in stream:
            try:
                message = protocol.decode(line)
            except protocol.ProtocolError:
                self._log("worker stdout (not protocol): " + line.rstrip()[:500])
                continue
            self._dispatch(message)
        proc.wait()
        with self._state:
            if self._proc is proc:
                self._hello_ready.set()
            waiting = list(self._queues.values())
        for box in waiting:
            box.put(_EXITED)

    def _dispatch(self, message: dict) -> None:
        if message.get("type") == "hello" and "id" not in message:
            self._hello = message
            self._hello_ready.set()
            return
        if message.get("type") == "hello":
            self._hello = message
        with self._state:
            box = self._queues.get(str(message.get("id")))
        if box is not None:
            box.put(message)
        elif message.get("type") in ("log", "warning", "error"):
            self._log(f"worker {message['type']}: {message.get('message')}")

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            line = line.rstrip()
            self._stderr.append(line)
            self._log(line)

    # -- requests -------------------------------------------------------------------------------
    def _send(self, request: dict) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise WorkerError("the worker is not running", "crash")
        try:
            proc.stdin.write(protocol.encode(request))
            proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise WorkerError(f"could not talk to the worker: {exc}", "crash") from exc

    def run(self, spec: RunSpec, on_event: EventSink | None = None,
            cancelled: Callable[[], bool] | None = None, poll_s: float = 0.1) -> dict:
        """Run the detection ``spec`` describes; return its ``result`` event (with the resolved
        spec under ``"spec"``); raise WorkerError otherwise.

        ``cancelled`` is polled; once it is true the worker is asked to stop, and the partial
        result it sends back is returned (with ``partial`` true). A worker that does not stop
        within a grace period is killed.
        """
        with self._run_lock:
            try:
                return self._run_once(spec, on_event, cancelled, poll_s, retry=True)
            except WorkerError as exc:
                self.last_error = str(exc)
                raise

    def _run_once(self, spec: RunSpec, on_event: EventSink | None,
                  cancelled: Callable[[], bool] | None, poll_s: float, retry: bool) -> dict:
        self.start()
        request_id = uuid.uuid4().hex[:12]
        box: queue.Queue = queue.Queue()
        with self._state:
            self._queues[request_id] = box
        try:
            self._send({"cmd": "detect", "id": request_id, "spec": spec.to_dict()})
            got_any = False
            cancel_sent_at: float | None = None
            while True:
                if cancelled is not None and cancel_sent_at is None and cancelled():
                    self._send({"cmd": "cancel", "id": request_id})
                    cancel_sent_at = time.monotonic()
                if cancel_sent_at is not None and time.monotonic() - cancel_sent_at > CANCEL_GRACE_S:
                    self.kill()
                    raise WorkerError("the worker did not stop after the cancel; it was ended",
                                      "cancelled")
                try:
                    message = box.get(timeout=poll_s)
                except queue.Empty:
                    continue
                if message is _EXITED:
                    if retry and not got_any and self._proc is not None and self._proc.returncode == 0:
                        # It exited for idleness just as the request went out: start afresh.
                        return self._run_once(spec, on_event, cancelled, poll_s, retry=False)
                    raise self._exit_error()
                got_any = True
                kind = message.get("type")
                if kind == "result":
                    return message
                if kind == "error":
                    raise self._engine_error(message)
                if on_event is not None:
                    on_event(message)
        finally:
            with self._state:
                self._queues.pop(request_id, None)

    def _engine_error(self, message: dict) -> WorkerError:
        text = str(message.get("message", "unknown error"))
        if is_out_of_memory(text):
            return WorkerError(f"{OOM_ADVICE} ({text})", "oom")
        return WorkerError(text, str(message.get("kind", "internal")))

    def _exit_error(self) -> WorkerError:
        code = self._proc.returncode if self._proc is not None else None
        tail = self.stderr_tail(8)
        if is_out_of_memory(tail):
            return WorkerError(f"{OOM_ADVICE} The worker process ended.", "oom")
        if code is not None and code < 0:
            how = f"was killed (signal {-code})"
        elif code is not None:
            how = f"stopped unexpectedly (exit code {code})"
        else:
            how = "stopped unexpectedly"
        text = f"The UnravelNet worker process {how}. Details are in the UnravelNet log tab."
        last = [line for line in tail.splitlines() if line.strip()]
        if last:
            text += f" Last message: {last[-1][:300]}"
        return WorkerError(text, "crash")
