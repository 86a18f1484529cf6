"""Fault injection: hostile lines on the warm worker's stdin never kill it nor make it deaf.

After each bad line the worker must answer it with an ``error`` event and still answer a
``ping`` and run a detection. The worker runs in the system Python (no torch: fast start)
with a scripted fake engine.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"

ENGINE = '''
import sys
import time


def run_detect(spec, emit, cancel):
    emit({"type": "result", "output": None, "layer": None, "count": 1, "counts": {"x": 1},
          "partial": False, "model": "fake", "features": None})
    if spec.input == "lingering":  # the result is out, the engine takes a while to return
        time.sleep(1.5)
    return 0


if __name__ == "__main__":
    from qgis_unravel.app.worker import main
    sys.exit(main(sys.argv[1:], run=run_detect))
'''
DETECT = b'{"cmd": "detect", "id": "d", "spec": {"input": "x.tif", "model": "m"}}\n'

HOSTILE = {
    "command as a list": b'{"cmd": ["detect"], "id": "1"}\n',
    "command as a number": b'{"cmd": 7}\n',
    "deeply nested JSON": b'{"cmd": "detect", "args": ' + b"[" * 200000 + b"]" * 200000 + b"}\n",
    "not UTF-8": b'{"cmd": "ping", "id": "\xff\xfe\xc3\x28"}\n',
    "binary garbage": bytes(range(1, 256)).replace(b"\n", b"") + b"\n",
    "a JSON array": b"[1, 2, 3]\n",
    "spec not an object": b'{"cmd": "detect", "id": "2", "spec": [1, 2]}\n',
    "spec with wrong types": b'{"cmd": "detect", "id": "3", "spec": {"input": 5, "tile_size": "big"}}\n',
    "id as an object": b'{"cmd": "detect", "id": {"x": [1]}, "spec": 5}\n',
    "an enormous line": b'{"cmd": "ping", "pad": "' + b"x" * (3 << 20) + b'"}\n',
    "truncated JSON": b'{"cmd": "detect", "args": ["a"\n',
}


class Worker:
    def __init__(self, folder: Path):
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{folder}"}
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(folder / "fake_engine.py"), "--idle", "60"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, raw: bytes) -> None:
        self.proc.stdin.write(raw)
        self.proc.stdin.flush()

    def next_event(self, timeout: float = 20.0) -> dict:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture()
def worker(tmp_path):
    (tmp_path / "fake_engine.py").write_text(ENGINE)
    w = Worker(tmp_path)
    assert w.next_event()["type"] == "hello"
    yield w
    w.close()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_line_gets_an_error_and_the_worker_keeps_serving(worker, name):
    worker.send(HOSTILE[name])
    answer = worker.next_event()
    assert answer["type"] == "error" and "\n" not in answer["message"], answer
    worker.send(b'{"cmd": "ping", "id": "p"}\n')
    pong = worker.next_event()
    assert pong["type"] == "hello" and pong["id"] == "p"
    worker.send(DETECT)
    result = worker.next_event()
    assert result["type"] == "result" and result["id"] == "d"
    assert worker.proc.poll() is None


def test_a_request_right_after_a_result_is_served_not_refused_as_busy(worker):
    worker.send(b'{"cmd": "detect", "id": "a", "spec": {"input": "lingering", "model": "m"}}\n')
    assert worker.next_event()["id"] == "a"
    worker.send(b'{"cmd": "detect", "id": "b", "spec": {"input": "x.tif", "model": "m"}}\n')
    answer = worker.next_event()
    assert answer["type"] == "result" and answer["id"] == "b", answer
