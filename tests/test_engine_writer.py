"""Writing detections: fields, CRS, atomic replacement, overwrite/append, embedded style."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr, osr
from rasterio.crs import CRS
from rasterio.transform import from_origin

from qgis_unravel.engine import writer
from qgis_unravel.engine.errors import Cancelled, UserError
from qgis_unravel.engine.georef import Georeferencer, box_corners
from qgis_unravel.engine.result import RasterDetections
from qgis_unravel.engine.writer import write_detections

CLASSES = ["plane", "ship", "storage-tank"]


def make_result(n: int = 3, seed: int = 0, georeferenced: bool = True) -> RasterDetections:
    rng = np.random.default_rng(seed)
    boxes = np.stack([rng.uniform(0, 500, n), rng.uniform(0, 500, n), rng.uniform(20, 60, n),
                      rng.uniform(5, 19, n), rng.uniform(-1.5, 1.5, n)], axis=1)
    wkt = CRS.from_epsg(32633).to_wkt() if georeferenced else None
    geo = Georeferencer(from_origin(500000, 5000000, 0.5, 0.5), wkt)
    polygons = geo.map_corners(box_corners(boxes))
    m = geo.measures(polygons)
    return RasterDetections(polygons, boxes, rng.uniform(0.3, 1, n).astype(np.float32),
                            rng.integers(0, 3, n), m.angle_deg, m.length_m, m.width_m, m.area_m2,
                            CLASSES, wkt, model="tiny-test", source="/data/scene.tif")


def read_layer(path, layer=None):
    ds = ogr.Open(str(path))
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    rows = [(f.GetGeometryRef().ExportToWkt(), f.items()) for f in lyr]
    srs = lyr.GetSpatialRef()
    return rows, (srs.ExportToWkt() if srs else None)


def test_features_carry_exactly_the_documented_fields(tmp_path):
    result = make_result()
    report = write_detections(result, tmp_path / "out.gpkg")
    assert report.layer == "out" and report.count == 3
    ds = ogr.Open(str(tmp_path / "out.gpkg"))
    defn = ds.GetLayerByName("out").GetLayerDefn()
    fields = {defn.GetFieldDefn(i).GetName(): defn.GetFieldDefn(i).GetTypeName()
              for i in range(defn.GetFieldCount())}
    assert fields == {"class_id": "Integer", "class_name": "String", "score": "Real", "angle_deg": "Real",
                      "length_m": "Real", "width_m": "Real", "area_m2": "Real", "model": "String",
                      "source": "String"}
    rows, srs = read_layer(tmp_path / "out.gpkg", "out")
    assert osr.SpatialReference(srs).GetAuthorityCode(None) == "32633"
    for (wkt, attrs), record, polygon in zip(rows, result.records(), result.polygons):
        assert attrs["class_name"] == CLASSES[attrs["class_id"]]
        assert attrs == pytest.approx(record)
        geometry = ogr.CreateGeometryFromWkt(wkt)  # keep the parent alive while using its ring
        ring = geometry.GetGeometryRef(0).GetPoints()
        assert np.allclose(ring, np.vstack([polygon, polygon[:1]]))


def test_an_existing_layer_is_never_replaced_silently(tmp_path):
    out = tmp_path / "out.gpkg"
    write_detections(make_result(3, seed=1), out)
    before = out.read_bytes()
    with pytest.raises(UserError, match="--overwrite.*--append"):
        write_detections(make_result(5, seed=2), out)
    assert out.read_bytes() == before
    write_detections(make_result(5, seed=2), out, append=True)
    assert len(read_layer(out, "out")[0]) == 8
    write_detections(make_result(2, seed=3), out, overwrite=True)
    assert len(read_layer(out, "out")[0]) == 2
    write_detections(make_result(4, seed=4), out, layer="second")  # a new layer keeps the others
    assert len(read_layer(out, "out")[0]) == 2 and len(read_layer(out, "second")[0]) == 4
    with pytest.raises(UserError, match="exclude"):
        write_detections(make_result(), out, overwrite=True, append=True)
    with pytest.raises(UserError, match="another CRS"):
        write_detections(make_result(2, georeferenced=False), out, append=True)
    assert len(read_layer(out, "out")[0]) == 2


def test_a_failure_during_the_write_leaves_the_old_file_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out.gpkg"
    write_detections(make_result(3), out)
    before = out.read_bytes()
    real = writer._write_features

    def failing(layer, result, cancel):
        real(layer, result, cancel)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_write_features", failing)
    with pytest.raises(UserError, match="No space left"):
        write_detections(make_result(50, seed=9), out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg"]  # no temporary left over
    with pytest.raises(UserError):
        write_detections(make_result(5), tmp_path / "new.gpkg")
    assert not (tmp_path / "new.gpkg").exists()


def test_a_cancel_during_the_write_leaves_no_partial_file(tmp_path):
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        write_detections(make_result(5), tmp_path / "out.gpkg", cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_bad_destinations_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        write_detections(make_result(), tmp_path / "nowhere" / "out.gpkg")
    with pytest.raises(UserError, match="no vector format"):
        write_detections(make_result(), tmp_path / "out.xyz123")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere; /proc refuses even root
            locked = Path("/proc")
        with pytest.raises(UserError, match="not writable|could not write"):
            write_detections(make_result(), locked / "out.gpkg")
    finally:
        (tmp_path / "locked").chmod(0o700)
    assert not (locked / "out.gpkg").exists()


def test_other_formats_by_extension_with_a_qml_sidecar(tmp_path):
    write_detections(make_result(4), tmp_path / "out.shp")
    write_detections(make_result(4), tmp_path / "dets.geojson")
    assert len(read_layer(tmp_path / "out.shp")[0]) == 4
    assert len(read_layer(tmp_path / "dets.geojson")[0]) == 4
    assert "categorizedSymbol" in (tmp_path / "out.qml").read_text()
    write_detections(make_result(2, seed=5), tmp_path / "out.shp", append=True)
    assert len(read_layer(tmp_path / "out.shp")[0]) == 6


def test_pixel_coordinates_without_crs_and_null_sizes(tmp_path):
    write_detections(make_result(2, georeferenced=False), tmp_path / "px.gpkg")
    rows, srs = read_layer(tmp_path / "px.gpkg")
    assert srs is None or "Undefined" in srs  # GeoPackage's "undefined" entry, no real CRS
    assert rows[0][1]["length_m"] is None and rows[0][1]["angle_deg"] is not None


def test_qgis_opens_the_geopackage_styled_by_class(tmp_path, qgis_app):
    from qgis.core import QgsVectorLayer

    write_detections(make_result(6), tmp_path / "out.gpkg")
    write_detections(make_result(2), tmp_path / "out.gpkg", layer="other")
    layer = QgsVectorLayer(f"{tmp_path / 'out.gpkg'}|layername=out", "dets", "ogr")
    assert layer.isValid() and layer.featureCount() == 6
    renderer = layer.renderer()
    assert renderer.type() == "categorizedSymbol"
    assert renderer.classAttribute() == "class_name"
    assert [c.value() for c in renderer.categories()] == CLASSES
    colours = {c.symbol().color().name() for c in renderer.categories()}
    assert len(colours) == len(CLASSES)
    other = QgsVectorLayer(f"{tmp_path / 'out.gpkg'}|layername=other", "other", "ogr")
    assert other.renderer().type() == "categorizedSymbol"
