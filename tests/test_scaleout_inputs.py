"""What a job reads (globs, STAC collections, VRT mosaics) and the mistakes it refuses early."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from osgeo import gdal, ogr
from rasterio.transform import from_origin
from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.app import cli, cluster
from qgis_unravel.app.inputs import expand_inputs
from qgis_unravel.app.scaleout import JobSpec, run_job
from qgis_unravel.engine.errors import UserError
from qgis_unravel.engine.spec import RunSpec

RECTS = [(60.0, 50.0, 30.0, 10.0, 0.3, (250, 40, 40)), (130.0, 100.0, 24.0, 12.0, -0.5, (40, 250, 40))]


def job(inputs, output, **kw) -> JobSpec:
    run = RunSpec(output=str(output), model="fake", tile_size=128, overlap=32)
    return JobSpec(tuple(str(i) for i in inputs), run, **kw)


def _layer(path):
    """The features of a file's first layer (read while the dataset is open)."""
    ds = ogr.Open(str(path))
    return [feature for feature in ds.GetLayer(0)]


def ignore(event):
    pass


def loader():
    return BrightObjectDetector(tile_size=128, overlap=32)


@pytest.fixture()
def three(tmp_path):
    return [write_raster(tmp_path / f"s{i}.tif", scene(160, 200, RECTS)) for i in range(3)]


def test_a_glob_is_every_match_sorted_and_each_raster_is_listed_once(tmp_path, three):
    found = expand_inputs([str(tmp_path / "s*.tif"), str(three[0])])
    assert found == [str(p) for p in three]
    with pytest.raises(UserError, match="no file matches"):
        expand_inputs([str(tmp_path / "none*.tif")])


def test_a_stac_item_collection_gives_one_raster_per_item(tmp_path, three):
    pystac = pytest.importorskip("pystac")
    items = []
    for i, path in enumerate(three):
        item = pystac.Item(f"scene-{i}", {"type": "Point", "coordinates": [15.0, 45.0]}, [15, 45, 15, 45],
                           dt.datetime(2026, 1, 1 + i), {})
        item.add_asset("thumbnail", pystac.Asset(f"{path.stem}.png", media_type="image/png"))
        item.add_asset("image", pystac.Asset(path.name, media_type=pystac.MediaType.COG))
        items.append(item)
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    assert expand_inputs([str(collection)]) == [str(p) for p in three]
    assert expand_inputs([str(collection)], asset="thumbnail")[0].endswith("s0.png")
    with pytest.raises(UserError, match="has no asset named 'nir'"):
        expand_inputs([str(collection)], asset="nir")


def test_a_vrt_mosaic_is_one_raster_with_the_features_of_the_whole_scene(tmp_path):
    whole = scene(200, 400, RECTS + [(198.0, 120.0, 40.0, 12.0, 0.1, (40, 40, 250))])  # one on the join
    transform = from_origin(500000.0, 5000000.0, 0.5, 0.5)
    full = write_raster(tmp_path / "full.tif", whole, transform=transform)
    halves = [write_raster(tmp_path / "left.tif", whole[:, :200], transform=transform),
              write_raster(tmp_path / "right.tif", whole[:, 200:], transform=from_origin(500100.0, 5000000.0,
                                                                                      0.5, 0.5))]
    vrt = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(p) for p in halves]).FlushCache()
    rows = {}
    for name, source in (("full", full), ("vrt", vrt)):
        out = tmp_path / f"{name}.gpkg"
        run_job(job([source], out), ignore, loader)
        rows[name] = [(f["class_id"], round(f["score"], 6), f.GetGeometryRef().Centroid().GetX())
                      for f in _layer(out)]
    assert len(rows["vrt"]) == 3 and rows["vrt"] == rows["full"]


def test_several_rasters_without_an_output_or_in_different_crss_are_refused_before_any_window(
        tmp_path, three, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "_detector", lambda *a: calls.append(a) or (loader(), None))
    events = []
    assert cli.run_detect([*map(str, three), "--model", "m.pth", "--json"], events.append) == 1
    assert "needs an output" in events[-1]["message"]
    other = write_raster(tmp_path / "utm34.tif", scene(160, 200, RECTS), crs="EPSG:32634")
    with pytest.raises(UserError, match="different CRSs"):
        run_job(job([three[0], other], tmp_path / "o.gpkg"), ignore, loader)
    done = run_job(job([three[0], other], tmp_path / "o.parquet", partition=True), ignore, loader)
    assert done["count"] == 4  # one file per raster, each in its own CRS
    first = tmp_path / "first.gpkg"
    run_job(job(three[:2], first), ignore, loader)
    with pytest.raises(UserError, match="--overwrite"):
        run_job(job(three[:2], first), ignore, loader)
    assert not calls


def test_workers_without_dask_is_one_clear_line(tmp_path, three, monkeypatch):
    monkeypatch.setattr(cluster, "distributed", None)
    events = []
    argv = [str(three[0]), "-o", str(tmp_path / "o.gpkg"), "--model", "m.pth", "--workers", "2"]
    code = cli.run_detect(argv, events.append)
    assert code == 1 and events[-1]["message"] == (
        "--workers and --scheduler need Dask: pip install 'qgis-unravel[cluster]'")


def test_the_job_result_counts_every_raster_and_the_single_raster_path_is_unchanged(tmp_path, three):
    event = run_job(job(three, tmp_path / "all.gpkg"), ignore, loader)
    assert event["count"] == 6 and event["rasters"] == 3 and event["counts"] == {"red": 3, "green": 3}
    sources = [f["source"] for f in _layer(tmp_path / "all.gpkg")]
    assert sources == [str(p) for p in three for _ in range(2)]
    assert np.isfinite([event["seconds"]]).all()


def test_the_terminal_shows_the_rate_and_the_workers_alive():
    import io

    from qgis_unravel.app.terminal import TerminalReporter

    err = io.StringIO()
    TerminalReporter(out=io.StringIO(), err=err)({"type": "progress", "done": 30, "total": 120, "eta_s": 95.0,
                                                   "stage": "tiles", "tiles_per_s": 4.25, "workers": 2})
    assert "30/120 tiles  4.2 tiles/s  2 workers  ETA 1m35s" in err.getvalue()
