"""Fault injection on the writer: concurrent runs, ``kill -9`` in the middle of a write.

Each scenario runs real child processes writing real GeoPackages, then reads them back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from osgeo import ogr

TESTS = Path(__file__).resolve().parent

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from qgis_unravel.engine.errors import UserError
    from qgis_unravel.engine.result import RasterDetections
    from qgis_unravel.engine.writer import write_detections

    out, tag, n, rounds, mode, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \\
        sys.argv[5], Path(sys.argv[6])
    rng = np.random.default_rng(abs(hash(tag)) % 1000)
    xy = rng.uniform(0, 1000, (n, 1, 2))
    polygons = xy + np.array([[0, 0], [5, 0], [5, 3], [0, 3]], float)
    nan = np.full(n, np.nan)
    result = RasterDetections(polygons=polygons, boxes_px=np.zeros((n, 5)), scores=np.ones(n, np.float32),
                              class_ids=np.zeros(n, np.int64), angle_deg=nan, length_m=nan, width_m=nan,
                              area_m2=nan, classes=["thing"], crs_wkt=None, model=tag, source=tag)
    while not go.exists():  # start together
        time.sleep(0.005)
    for _ in range(rounds):
        try:
            write_detections(result, out, "things", append=(mode == "append"))
        except UserError as exc:
            print("user error:", exc, flush=True)
            sys.exit(1)
    print("ok", flush=True)
""")


def _start(tmp_path, out, tag, n, rounds, mode):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(out), tag, str(n), str(rounds), mode,
                             str(tmp_path / "go")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _count(path: Path, layer: str = "things") -> int:
    ds = ogr.Open(str(path))  # keep the dataset alive while its layer is used
    return ds.GetLayerByName(layer).GetFeatureCount()


@pytest.mark.slow
def test_two_runs_appending_to_one_layer_at_once_lose_nothing(tmp_path):
    out = tmp_path / "shared.gpkg"
    runs = [_start(tmp_path, out, tag, 3000, 4, "append") for tag in ("a", "b")]
    time.sleep(1.0)  # both have imported GDAL and wait for the signal
    (tmp_path / "go").touch()
    for run in runs:
        _, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-2000:]
    assert _count(out) == 2 * 4 * 3000


@pytest.mark.slow
def test_two_runs_creating_the_same_layer_at_once_never_replace_each_other(tmp_path):
    out = tmp_path / "new.gpkg"
    runs = [_start(tmp_path, out, tag, 20000, 1, "create") for tag in ("a", "b")]
    time.sleep(1.0)
    (tmp_path / "go").touch()
    codes, outputs = [], []
    for run in runs:
        stdout, err = run.communicate(timeout=180)
        codes.append(run.returncode)
        outputs.append(stdout)
    assert sorted(codes) == [0, 1], outputs
    loser = outputs[codes.index(1)]
    assert "already exists" in loser and "--append" in loser
    assert _count(out) == 20000


def test_kill_9_mid_write_keeps_the_old_file_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "out.gpkg"
    (tmp_path / "go").touch()
    first = _start(tmp_path, out, "old", 50, 1, "create")
    assert first.wait(timeout=120) == 0
    before = out.read_bytes()
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from qgis_unravel.engine import writer
        real = writer._write_features
        def stall(layer, result, cancel):
            real(layer, result, cancel)
            print("writing", flush=True)
            time.sleep(120)  # killed here, with the temporary copy half done
        writer._write_features = stall
        sys.argv = sys.argv[1:]
        exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"))
    """))
    victim = subprocess.Popen([sys.executable, str(script), str(tmp_path / "writer.py"), str(out), "new",
                               "500", "1", "append", str(tmp_path / "go")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "writing", victim.stderr.read()[-2000:]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert out.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # the leftover is there
    again = _start(tmp_path, out, "next", 20, 1, "append")
    assert again.wait(timeout=120) == 0, again.stderr.read()
    assert _count(out) == 70
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
