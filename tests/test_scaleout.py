"""Scale-out: several rasters as one job, on a 2-process Dask cluster, with faults and resume.

The workers run the bright-object double (cheap, exact), loaded once per worker by the
plugin. Every check compares the features of the outputs read back: the same rasters in
one process and on the cluster must give the same features, in the same order.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr
from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.app import cli
from qgis_unravel.app.scaleout import JobInterrupted, JobSpec, run_job
from qgis_unravel.engine.spec import RunSpec

distributed = pytest.importorskip("distributed")

COLOURS = [(250, 40, 40), (40, 250, 40), (40, 40, 250)]


class SlowBrightObjectDetector(BrightObjectDetector):
    """The double, slowed down so that a run lasts long enough to be interrupted."""

    def predict(self, images, *args, **kwargs):
        time.sleep(0.03 * len(images))
        return super().predict(images, *args, **kwargs)


def fake_loader(slow: bool = False):
    kind = SlowBrightObjectDetector if slow else BrightObjectDetector
    return functools.partial(kind, tile_size=128, overlap=32)


def _rects(seed: int, count: int, size: int):
    rng = np.random.default_rng(seed)
    rects = []
    while len(rects) < count:
        cx, cy = rng.uniform(15, size - 15, 2)
        if all(np.hypot(cx - r[0], cy - r[1]) > 40 for r in rects):
            rects.append((cx, cy, rng.uniform(14, 30), rng.uniform(6, 10), rng.uniform(-1.4, 1.4),
                          COLOURS[len(rects) % 3]))
    return rects


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """Three small scenes with objects on and off window seams (tiles 128, overlap 32)."""
    folder = tmp_path_factory.mktemp("scenes")
    return [write_raster(folder / f"scene{i}.tif", scene(330, 300 + 20 * i, _rects(i, 14, 300)))
            for i in range(3)]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def features(path: Path, layer: str = None):
    """(attributes, WKT) of every feature, in file order."""
    ds = ogr.Open(str(path))
    lyr = ds.GetLayerByName(layer or path.stem)
    out = []
    for f in lyr:
        out.append((tuple(f.GetField(i) for i in range(f.GetFieldCount())), f.GetGeometryRef().ExportToWkt()))
    return out


def spec(rasters, output, **kw) -> JobSpec:
    run = RunSpec(output=str(output), model="fake", tile_size=128, overlap=32, batch_size=2)
    return JobSpec(inputs=tuple(str(r) for r in rasters), run=run, **kw)


@pytest.fixture(scope="module")
def reference(rasters, tmp_path_factory):
    """The three rasters in one process: the output every distributed run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "ref.gpkg"
    event = run_job(spec(rasters, out), lambda e: None, fake_loader())
    assert event["rasters"] == 3 and event["workers"] is None
    found = features(out)
    assert len(found) >= 30 and len({f[0][-1] for f in found}) == 3  # every raster has features
    return found


def test_cli_with_two_workers_writes_the_same_features_as_one_process(
        tmp_path, rasters, reference, monkeypatch):
    monkeypatch.setattr(cli, "_resolve", lambda model, emit: (Path(model), None))
    monkeypatch.setattr(cli, "_model_loader", lambda path, card, device: fake_loader())
    out = tmp_path / "two.gpkg"
    events = []
    code = cli.run_detect([*map(str, rasters), "-o", str(out), "--model", "fake", "--workers", "2",
                           "--tile", "128", "--overlap", "32", "--windows-per-task", "4"], events.append)
    assert code == 0, events
    result = events[-1]
    assert result["type"] == "result" and result["workers"] == 2 and result["rasters"] == 3
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == result["tiles"]
    assert {"tiles_per_s", "workers", "eta_s"} <= set(progress[-1])
    assert features(out) == reference
    manifest = json.loads((tmp_path / "two.gpkg.job" / "manifest.json").read_text())
    assert manifest["complete"] is True and len(manifest["done"]) == 3


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_unchanged(
        tmp_path, rasters, reference, client):
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def emit(event):
        if event["type"] == "progress" and event["done"] > 0 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(event["done"])

    out = tmp_path / "killed.gpkg"
    event = run_job(spec(rasters, out, windows_per_task=2), emit, fake_loader(slow=True),
                    client=client)
    assert killed and killed[0] < event["tiles"]  # the kill happened before the end
    assert event["tiles_run"] == event["tiles"]  # every window once, none lost or counted twice
    assert features(out) == reference
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()  # the nanny started a new worker


def test_an_interrupted_job_resumes_without_redoing_finished_rasters(tmp_path, rasters, reference, client):
    out = tmp_path / "resumed.gpkg"
    cancel = threading.Event()
    job_folder = tmp_path / "resumed.gpkg.job"

    def emit(event):  # Ctrl-C as soon as the first raster is finished
        if any(job_folder.glob("*.npz")):
            cancel.set()

    with pytest.raises(JobInterrupted, match="run the same command again to resume"):
        run_job(spec(rasters, out, windows_per_task=2), emit, fake_loader(slow=True), cancel,
                client=client)
    assert not out.exists()
    kept = {p.name: p.stat().st_mtime_ns for p in job_folder.glob("*.npz")}
    assert 1 <= len(kept) < 3
    manifest = json.loads((job_folder / "manifest.json").read_text())
    assert manifest["complete"] is False and len(manifest["done"]) == len(kept)

    logs = []
    event = run_job(spec(rasters, out, windows_per_task=2), logs.append, fake_loader(slow=True),
                    client=client)
    assert event["resumed"] == len(kept)
    done_before = sum(entry["tiles"] for entry in manifest["done"].values())
    assert event["tiles_run"] == event["tiles"] - done_before  # finished rasters were not run again
    assert any("resuming" in e.get("message", "") for e in logs)
    assert features(out) == reference


def test_geoparquet_output_reads_back_with_geopandas(tmp_path, rasters, reference):
    geopandas = pytest.importorskip("geopandas")
    out = tmp_path / "boxes.parquet"
    run_job(spec(rasters, out), lambda e: None, fake_loader())
    frame = geopandas.read_parquet(out)
    assert len(frame) == len(reference)
    assert frame.crs.to_epsg() == 32633
    assert {"class_name", "score", "source", "window_x0", "window_y0", "window_width",
            "window_height"} <= set(frame.columns)
    assert frame["source"].tolist() == [f[0][-1] for f in reference]
    assert frame["window_width"].between(1, 128).all()
    polygon = ogr.CreateGeometryFromWkt(reference[0][1])  # kept alive: the ring belongs to it
    ring = polygon.GetGeometryRef(0).GetPoints()
    assert np.allclose(np.asarray(frame.geometry.iloc[0].exterior.coords), ring, atol=1e-6, rtol=0)

    parts = tmp_path / "parts.parquet"
    run_job(spec(rasters, parts, partition=True), lambda e: None, fake_loader())
    assert sorted(p.name for p in parts.iterdir()) == [f"part-{i:06d}.parquet" for i in range(3)]
    assert len(geopandas.read_parquet(parts)) == len(reference)
