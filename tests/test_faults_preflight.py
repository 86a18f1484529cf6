"""Absurd options and doomed outputs are refused before the model loads and the first tile.

Every case: exit code 1, one line without a traceback, no model loaded, no tile run, no output
written and an existing output byte-identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.app import cli
from qgis_unravel.detector import checkpoint
from qgis_unravel.worker import protocol

TESTS = Path(__file__).resolve().parent
RECTS = [(40.0, 40.0, 30.0, 10.0, 0.3, (250, 40, 40))]


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    loads, tiles = [], []

    class Counting(BrightObjectDetector):
        def predict(self, images, *args, **kwargs):
            tiles.extend(images)
            return super().predict(images, *args, **kwargs)

    def load(path, device="cpu"):
        loads.append(path)
        return Counting(tile_size=128, overlap=32)

    monkeypatch.setattr(checkpoint, "load_detector", load)
    monkeypatch.setattr(cli, "_DETECTORS", {})
    model = tmp_path / "fake.pth"
    model.write_bytes(b"unused")
    raster = write_raster(tmp_path / "scene.tif", scene(96, 96, RECTS))
    return raster, model, loads, tiles


def _run(argv):
    events = []
    code = cli.run_detect([str(a) for a in argv], events.append)
    for event in events:
        protocol.decode(protocol.encode(event))
    return code, events


def _refused(code, events, expected):
    errors = [e for e in events if e["type"] == "error"]
    assert code == 1 and len(errors) == 1 and errors[0]["kind"] == "user", events
    assert expected in errors[0]["message"] and "\n" not in errors[0]["message"], errors[0]
    assert not any("Traceback" in e.get("message", "") for e in events)


@pytest.mark.parametrize("option, value, expected", [
    ("--tile", "0", "tile size"),
    ("--tile", "1000000", "tile size"),
    ("--max-detections", "0", "max detections"),
    ("--batch", "100000", "batch size"),
])
def test_absurd_options_are_refused_not_replaced(tmp_path, setup, option, value, expected):
    raster, model, loads, tiles = setup
    out = tmp_path / "out.gpkg"
    code, events = _run([raster, "-o", out, "--model", model, option, value])
    _refused(code, events, expected)
    assert loads == [] and tiles == [] and not out.exists()


GSD_CHILD = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, {tests!r})
    from qgis_unravel.detector import checkpoint
    from test_engine_fakes import BrightObjectDetector
    checkpoint.load_detector = lambda path, device="cpu": BrightObjectDetector(128, 32)
    from qgis_unravel.app.cli import run_detect
    vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    cap = vm * 1024 + (2 << 30)  # 2 GiB above what is mapped now
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    events = []
    code = run_detect(sys.argv[1:], events.append)
    print(json.dumps({{"code": code, "events": events}}))
""")


@pytest.mark.slow
def test_a_gsd_finer_than_any_sensor_is_refused_before_any_work(tmp_path, setup):
    raster, model, _, _ = setup
    script = tmp_path / "gsd.py"
    script.write_text(GSD_CHILD.format(tests=str(TESTS)))
    argv = [str(raster), "-o", str(tmp_path / "o.gpkg"), "--model", str(model), "--gsd", "1e-9"]
    done = subprocess.run([sys.executable, str(script)] + argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    _refused(report["code"], report["events"], "--gsd")
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.parametrize("name", ["existing layer", "missing folder", "csv", "gpx"])
def test_a_doomed_output_is_refused_before_the_model_loads(tmp_path, setup, name):
    raster, model, loads, tiles = setup
    existing = tmp_path / "old.gpkg"
    assert _run([raster, "-o", existing, "--model", model, "--device", "cpu"])[0] == 0
    before = existing.read_bytes()
    loads.clear()
    tiles.clear()
    out, expected = {
        "existing layer": (existing, "already exists"),
        "missing folder": (tmp_path / "no" / "such" / "out.gpkg", "does not exist"),
        "csv": (tmp_path / "out.csv", "cannot write detections as CSV"),
        "gpx": (tmp_path / "out.gpx", "cannot write detections as GPX"),
    }[name]
    code, events = _run([raster, "-o", out, "--model", model, "--device", "cpu"])
    _refused(code, events, expected)
    assert loads == [] and tiles == []
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.pth", "old.gpkg", "scene.tif"]
