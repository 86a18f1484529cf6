"""Fault injection: a remote raster whose server stops answering.

A server on 127.0.0.1 accepts connections and never answers. Without care GDAL waits forever,
deaf to Ctrl-C; the run must end on Cancel or Ctrl-C within seconds, and on its own once the
HTTP timeout passes, each time with one clear line and exit code 1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_engine_fakes import BrightObjectDetector

from qgis_unravel.app import cli
from qgis_unravel.detector import checkpoint
from qgis_unravel.engine import raster
from qgis_unravel.engine.errors import UserError

TESTS = Path(__file__).resolve().parent


@pytest.fixture()
def silent_server():
    """A TCP server on 127.0.0.1 that accepts and then says nothing (closed at teardown)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"/vsicurl/http://127.0.0.1:{server.getsockname()[1]}/scene.tif"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture()
def fake_model(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "load_detector", lambda path, device="cpu": BrightObjectDetector())
    monkeypatch.setattr(cli, "_DETECTORS", {})
    path = tmp_path / "fake.pth"
    path.write_bytes(b"unused")
    return path


def test_cancel_ends_a_run_stuck_on_a_silent_server(tmp_path, silent_server, fake_model):
    cancel = threading.Event()
    events: list = []
    codes: list = []
    argv = [silent_server, "-o", str(tmp_path / "o.gpkg"), "--model", str(fake_model), "--device", "cpu"]
    runner = threading.Thread(target=lambda: codes.append(cli.run_detect(argv, events.append, cancel)),
                              daemon=True)
    runner.start()
    time.sleep(1.0)
    cancel.set()
    runner.join(10)
    assert not runner.is_alive(), "the run did not stop on cancel"
    assert codes == [1] and events[-1]["type"] == "error" and "cancelled" in events[-1]["message"]
    assert not (tmp_path / "o.gpkg").exists()


CLI = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from qgis_unravel.detector import checkpoint
    from test_engine_fakes import BrightObjectDetector
    checkpoint.load_detector = lambda path, device="cpu": BrightObjectDetector()
    from qgis_unravel.app.cli import main
    print("ready", flush=True)
    sys.exit(main(sys.argv[1:]))
""")


def _cli(tmp_path, url, env):
    script = tmp_path / "cli.py"
    script.write_text(CLI.format(tests=str(TESTS)))
    model = tmp_path / "fake.pth"
    model.write_bytes(b"unused")
    return subprocess.Popen([sys.executable, str(script), "detect", url, "-o", str(tmp_path / "o.gpkg"),
                             "--model", str(model), "--device", "cpu", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_ends_a_cli_run_stuck_on_a_silent_server(tmp_path, silent_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDAL_HTTP")}
    proc = _cli(tmp_path, silent_server, env)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)  # inside GDAL's open by now
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not stop a run waiting on a silent server")
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cancelled" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.slow
def test_the_http_timeout_ends_a_stuck_run_with_one_line(tmp_path, silent_server):
    env = {**os.environ, "GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_CONNECTTIMEOUT": "2",
           "GDAL_HTTP_MAX_RETRY": "0"}
    proc = _cli(tmp_path, silent_server, env)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the HTTP timeout did not end the run")
    assert proc.returncode == 1, err[-2000:]
    assert err.strip().startswith("error: cannot read") and err.strip().count("\n") == 0, err


def test_remote_rasters_get_http_timeouts_unless_the_user_set_them(monkeypatch):
    for name in raster.NETWORK_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "7")
    with pytest.raises(UserError):
        raster.open_dataset("/vsicurl/http://127.0.0.1:9/none.tif")
    assert os.environ["GDAL_HTTP_TIMEOUT"] == "7"
    assert os.environ["GDAL_HTTP_CONNECTTIMEOUT"] == raster.NETWORK_DEFAULTS["GDAL_HTTP_CONNECTTIMEOUT"]
