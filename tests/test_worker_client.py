"""The warm worker and the plugin's client, against a scripted fake engine.

The fake engine is a small script that starts the real worker server (``app.worker.main``) with a
fake run function, in /usr/bin/python3 (no torch: it starts in a blink). It behaves as told by
the spec's ``input``, so every failure path of the protocol can be driven on purpose.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qgis_unravel.engine.spec import RunSpec
from qgis_unravel.plugin.worker_client import WorkerClient, WorkerError

SYSTEM_PYTHON = "/usr/bin/python3"

FAKE_ENGINE = '''
import json, os, sys, time
from dataclasses import replace

def run_detect(spec, emit, cancel):
    mode = spec.input
    if mode == "ok":
        emit({"type": "progress", "done": 1, "total": 1, "eta_s": 0.0, "stage": "tiles"})
        emit({"type": "result", "output": None, "layer": None, "count": 3, "counts": {"plane": 3},
              "partial": False, "model": "fake", "features": None})
        return 0
    if mode == "args":
        emit({"type": "result", "output": None, "layer": None, "count": 0, "counts": {},
              "partial": False, "model": spec.to_json(), "features": None})
        return 0
    if mode == "slow":
        total = int(spec.tile_size)
        for done in range(total):
            if cancel():
                emit({"type": "result", "output": None, "layer": None, "count": done, "counts": {},
                      "partial": True, "model": "fake", "features": None})
                return 0
            emit({"type": "progress", "done": done, "total": total, "eta_s": 1.0, "stage": "tiles"})
            time.sleep(0.05)
        emit({"type": "result", "output": None, "layer": None, "count": total, "counts": {},
              "partial": False, "model": "fake", "features": None})
        return 0
    if mode == "print":
        print("stray text from a library")
        os.write(1, b"stray bytes on fd 1\\n")
        return run_detect(replace(spec, input="ok"), emit, cancel)
    if mode == "user-error":
        emit({"type": "error", "kind": "user", "message": "no such raster: x.tif"})
        return 2
    if mode == "raise":
        raise RuntimeError("boom in the engine")
    if mode == "oom":
        emit({"type": "error", "kind": "internal", "message": "CUDA out of memory. Tried to allocate 2 GiB"})
        return 1
    if mode == "crash":
        sys.stderr.write("fatal: segfault-like crash\\n")
        sys.stderr.flush()
        os._exit(3)
    if mode == "silent":
        return 0
    raise ValueError(mode)

if __name__ == "__main__":
    from qgis_unravel.app.worker import main
    sys.exit(main(sys.argv[1:], run=run_detect))
'''


def job(mode: str, **fields) -> RunSpec:
    """A spec that tells the fake engine what to do (``slow`` takes its step count as tile_size)."""
    return RunSpec(input=mode, **fields)


@pytest.fixture(scope="module")
def fake_engine_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake_engine")
    (folder / "fake_engine.py").write_text(textwrap.dedent(FAKE_ENGINE))
    return folder


def make_client(folder: Path, idle_s: float = 60.0, logs: list | None = None) -> WorkerClient:
    sink = logs.append if logs is not None else None
    return WorkerClient(SYSTEM_PYTHON, idle_s=idle_s, log=sink, script=str(folder / "fake_engine.py"))


@pytest.fixture(scope="module")
def client(fake_engine_dir):
    worker = make_client(fake_engine_dir)
    yield worker
    worker.stop()


def test_hello_reports_python_and_missing_torch(client):
    hello = client.start()
    assert hello["type"] == "hello" and hello["protocol"] == 2
    assert hello["torch"] is None and "torch_error" in hello
    assert hello["pid"] == client.pid


def test_result_and_progress_reach_the_caller(client):
    events = []
    result = client.run(job("ok"), on_event=events.append)
    assert result["count"] == 3 and result["counts"] == {"plane": 3}
    assert [e["type"] for e in events] == ["progress"]


def test_worker_stays_warm_between_runs(client):
    client.run(job("ok"))
    pid = client.pid
    client.run(job("args", tile_size=512))
    assert client.pid == pid


def test_spec_reaches_the_engine_unchanged_as_json(client):
    spec = job("args", output="out put.gpkg", score_threshold=0.25, classes=("plane", "ship"),
               bands=(3, 2, 1), tile_size=512)
    result = client.run(spec)
    assert RunSpec.from_json(result["model"]) == spec


def test_stray_stdout_does_not_corrupt_the_protocol(client):
    assert client.run(job("print"))["count"] == 3


def test_user_error_is_raised_with_its_message(client):
    with pytest.raises(WorkerError) as err:
        client.run(job("user-error"))
    assert err.value.kind == "user" and "no such raster" in str(err.value)
    assert client.run(job("ok"))["count"] == 3  # still usable


def test_engine_exception_becomes_internal_error(client):
    with pytest.raises(WorkerError) as err:
        client.run(job("raise"))
    assert err.value.kind == "internal" and "boom in the engine" in str(err.value)


def test_engine_returning_without_result_is_an_error(client):
    with pytest.raises(WorkerError, match="without a result"):
        client.run(job("silent"))


def test_out_of_memory_gets_advice(client):
    with pytest.raises(WorkerError) as err:
        client.run(job("oom"))
    assert err.value.kind == "oom" and "smaller batch size" in str(err.value)


def test_cancel_returns_partial_result(client):
    flag = threading.Event()
    seen = []

    def on_event(message):
        seen.append(message)
        if message.get("done", 0) >= 3:
            flag.set()

    result = client.run(job("slow", tile_size=200), on_event=on_event, cancelled=flag.is_set)
    assert result["partial"] is True
    assert 3 <= result["count"] < 200


def test_crash_is_reported_and_next_run_restarts(fake_engine_dir):
    logs: list[str] = []
    worker = make_client(fake_engine_dir, logs=logs)
    try:
        with pytest.raises(WorkerError) as err:
            worker.run(job("crash"))
        assert err.value.kind == "crash"
        assert "exit code 3" in str(err.value) and "segfault-like" in str(err.value)
        assert any("segfault-like" in line for line in logs)  # stderr went to the log
        assert worker.run(job("ok"))["count"] == 3
    finally:
        worker.stop()


def test_killed_worker_mid_run_gives_clear_error(fake_engine_dir):
    worker = make_client(fake_engine_dir)
    try:
        worker.start()

        def kill_when_running(message):
            if message.get("done") == 2:
                os.kill(worker.pid, signal.SIGKILL)

        with pytest.raises(WorkerError) as err:
            worker.run(job("slow", tile_size=500), on_event=kill_when_running)
        assert err.value.kind == "crash" and "killed" in str(err.value)
        assert "killed" in worker.last_error
    finally:
        worker.stop()


def test_idle_worker_exits_and_is_restarted(fake_engine_dir):
    worker = make_client(fake_engine_dir, idle_s=0.5)
    try:
        worker.start()
        first = worker.pid
        deadline = time.monotonic() + 10
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not worker.alive()
        assert worker.run(job("ok"))["count"] == 3
        assert worker.pid != first
    finally:
        worker.stop()


def test_missing_interpreter_is_a_user_error(tmp_path):
    worker = WorkerClient(str(tmp_path / "no-python"))
    with pytest.raises(WorkerError) as err:
        worker.run(job("ok"))
    assert err.value.kind == "user" and "could not start" in str(err.value)


def test_stop_ends_the_process(fake_engine_dir):
    worker = make_client(fake_engine_dir)
    worker.start()
    worker.stop()
    assert not worker.alive()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_worker_exits_when_client_stdin_closes(fake_engine_dir):
    worker = make_client(fake_engine_dir)
    worker.start()
    worker._proc.stdin.close()
    worker._proc.wait(10)
    assert worker._proc.returncode == 0
