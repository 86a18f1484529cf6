"""The warm worker: one process that keeps detectors loaded between runs.

``python -m qgis_unravel.app.worker`` reads requests (JSON lines) on stdin and answers with the
protocol's events on stdout, tagged with the request's ``id``. One detection runs at a time, in
a thread, so ``cancel`` and ``ping`` are answered while it runs. The process exits on
``shutdown``, when stdin closes (its client died) or after ``--idle`` seconds without work, so
a forgotten worker never holds memory or a GPU forever.

A ``detect`` request carries its run as a ``RunSpec`` in JSON (``"spec": {...}``); the worker
checks it and hands it to the run function, ``app.cli.run_spec`` unless ``main`` is given
another one (the tests start a small script that passes a fake).

Only protocol lines may reach stdout: the real stdout is kept for them and file descriptor 1 is
pointed at stderr, so stray prints from libraries cannot corrupt the stream.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import traceback
from typing import IO, Any, Callable

from ..engine.errors import UserError
from ..engine.spec import RunSpec
from ..worker import protocol

TERMINAL = ("result", "error")
RunFn = Callable[[RunSpec, Callable[[dict], None], threading.Event], int]


class CancelFlag(threading.Event):
    """A cancel flag the engine may call (``cancel()``) or query (``cancel.is_set()``)."""

    def __call__(self) -> bool:
        return self.is_set()


def describe_runtime() -> dict[str, Any]:
    """The ``hello`` event: Python, torch and the GPUs with their free memory."""
    hello: dict[str, Any] = {"type": "hello", "protocol": protocol.PROTOCOL_VERSION,
                             "python": sys.version.split()[0], "executable": sys.executable,
                             "pid": os.getpid(), "torch": None, "cuda": False, "devices": []}
    try:
        import torch
    except Exception as exc:  # torch missing or broken: say so, the client explains
        hello["torch_error"] = f"{type(exc).__name__}: {exc}"
        return hello
    hello["torch"] = torch.__version__
    hello["cuda_version"] = torch.version.cuda
    try:
        if torch.cuda.is_available():
            hello["cuda"] = True
            for index in range(torch.cuda.device_count()):
                free, _total = torch.cuda.mem_get_info(index)
                hello["devices"].append({"index": index, "name": torch.cuda.get_device_name(index),
                                         "free_mb": int(free // 2**20)})
    except Exception as exc:  # a broken driver must not stop the worker
        hello["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return hello


class Job:
    """One detection request running in its own thread."""

    def __init__(self, request_id: str, spec: RunSpec, server: WorkerServer):
        self.id = request_id
        self.spec = spec
        self.cancel = CancelFlag()
        self.finished_with_event = False
        self._server = server
        self.thread = threading.Thread(target=self._run, name=f"detect-{request_id}", daemon=True)

    def emit(self, message: dict[str, Any]) -> None:
        if message.get("type") in TERMINAL:
            if self.finished_with_event:
                return
            self.finished_with_event = True
        self._server.send({**message, "id": self.id})

    def _run(self) -> None:
        try:
            code = self._server.run(self.spec, self.emit, self.cancel)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.emit(protocol.error(f"{type(exc).__name__}: {exc}", "internal"))
            code = 1
        if not self.finished_with_event:
            self.emit(protocol.error(f"the engine stopped without a result (exit code {code})",
                                     "internal"))
        self._server.job_done(self)


class WorkerServer:
    """Reads requests, runs jobs, writes events; see the module docstring."""

    def __init__(self, out: IO[str], run: RunFn, idle_s: float = 600.0):
        self._out = out
        self.run = run
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._inbox: queue.Queue = queue.Queue()

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            protocol.emit(self._out, message)

    def job_done(self, job: Job) -> None:
        with self._lock:
            if self._job is job:
                self._job = None
        self._inbox.put({"cmd": "_job_done"})

    def busy(self) -> bool:
        with self._lock:
            return self._job is not None

    def read_requests(self, stream: IO[str]) -> None:
        """Feed stdin lines into the inbox; EOF means the client is gone."""
        for line in stream:
            if line.strip():
                self._inbox.put(line)
        self._inbox.put(None)

    def serve(self, stream: IO[str]) -> int:
        self.send(describe_runtime())
        threading.Thread(target=self.read_requests, args=(stream,), daemon=True).start()
        while True:
            try:
                item = self._inbox.get(timeout=self.idle_s if self.idle_s > 0 else None)
            except queue.Empty:
                if self.busy():
                    continue
                self.send({"type": "log", "message": f"idle for {self.idle_s:g} s, exiting"})
                return 0
            if item is None:
                self._cancel_all()
                return 0
            if isinstance(item, dict):  # internal wake-up after a job
                continue
            if self.handle(item) == "shutdown":
                self._cancel_all()
                return 0

    def handle(self, line: str) -> str | None:
        try:
            request = protocol.decode(line)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(f"bad request: {exc}", "internal"))
            return None
        cmd = request.get("cmd")
        if cmd == "ping":
            self.send({**describe_runtime(), **({"id": request["id"]} if "id" in request else {})})
        elif cmd == "detect":
            self._start_job(request)
        elif cmd == "cancel":
            with self._lock:
                job = self._job
            if job is not None and request.get("id") in (None, job.id):
                job.cancel.set()
        elif cmd == "shutdown":
            return "shutdown"
        else:
            self.send(protocol.error(f"unknown command {cmd!r}", "internal"))
        return None

    def _start_job(self, request: dict[str, Any]) -> None:
        request_id = str(request.get("id", ""))
        try:
            spec = RunSpec.from_dict(request.get("spec")).validate()
        except (UserError, TypeError) as exc:
            self.send({**protocol.error(f"bad run spec: {exc}", "user"), "id": request_id})
            return
        with self._lock:
            if self._job is not None:
                busy_id = self._job.id
                job = None
            else:
                job = self._job = Job(request_id, spec, self)
        if job is None:
            self.send({**protocol.error(f"the worker is busy with request {busy_id}", "user"),
                       "id": request_id})
            return
        job.thread.start()

    def _cancel_all(self) -> None:
        with self._lock:
            job = self._job
        if job is not None:
            job.cancel.set()
            job.thread.join(timeout=30)


def protocol_stdout() -> IO[str]:
    """Keep the real stdout for protocol lines and send everything else printed to stderr."""
    try:
        fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptors (embedded use)
        return sys.stdout
    out = open(fd, "w", encoding="utf-8", buffering=1, newline="\n")  # noqa: SIM115
    sys.stdout = sys.stderr
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m qgis_unravel.app.worker",
                                     description="Warm UnravelNet worker speaking JSON lines.")
    parser.add_argument("--idle", type=float, default=600.0,
                        help="exit after this many seconds without a request (0: never)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, run: RunFn | None = None) -> int:
    """Serve requests on stdin; ``run`` runs one detection (default: the engine's ``run_spec``)."""
    args = parse_args(argv)
    if run is None:
        from .cli import run_spec as run
    out = protocol_stdout()
    stdin = open(sys.stdin.fileno(), encoding="utf-8", closefd=False)  # noqa: SIM115
    server = WorkerServer(out, run, args.idle)
    return server.serve(stdin)


if __name__ == "__main__":
    sys.exit(main())
