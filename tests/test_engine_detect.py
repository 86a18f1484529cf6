"""detect_raster end to end on small generated GeoTIFFs with a deterministic double detector."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from osgeo import ogr, osr
from rasterio.transform import from_origin
from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.detector.config import Normalization, Thresholds
from qgis_unravel.engine.detect import detect_raster
from qgis_unravel.engine.errors import UserError
from qgis_unravel.engine.georef import apply_affine, box_corners
from qgis_unravel.engine.spec import ModelDefaults, RunSpec

TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)
RED, GREEN, BLUE = (250, 40, 40), (40, 250, 40), (40, 40, 250)


def _match(found: np.ndarray, truth: np.ndarray, tol: float = 1.0) -> list:
    """For each true box, the indices of found boxes whose centre and size match it."""
    out = []
    for cx, cy, w, h, _ in truth:
        d = np.abs(found[:, :4] - [cx, cy, w, h]).max(axis=1) if len(found) else np.zeros(0)
        out.append(np.flatnonzero(d <= tol).tolist())
    return out


def test_objects_straddling_seams_are_reported_once_and_whole(tmp_path):
    # 448 x 448 with tiles of 256 and overlap 64: interior borders at x/y = 192 and 256
    truth = np.array([
        [256.0, 100, 50, 12, 0.0],        # crosses the first tile's right border, inside the next
        [100.0, 256, 44, 14, 0.0],        # crosses a horizontal border
        [250.0, 252, 40, 16, 0.0],        # near the corner of four tiles
        [190.0, 380, 36, 12, 0.0],        # crosses the second tile's left border
        [330.0, 330, 30, 10, 0.0],        # away from every border
    ])
    colours = [RED, GREEN, BLUE, RED, GREEN]
    img = scene(448, 448, [(*b, c) for b, c in zip(truth, colours)])
    path = write_raster(tmp_path / "seams.tif", img)
    result = detect_raster(path, BrightObjectDetector(), RunSpec(tile_size=256, overlap=64))
    matches = _match(result.boxes_px, truth)
    assert [len(m) for m in matches] == [1] * len(truth), result.boxes_px
    assert len(result) == len(truth)
    assert sorted(result.class_ids.tolist()) == sorted([0, 1, 2, 0, 1])
    plain = detect_raster(path, BrightObjectDetector(),
                          RunSpec(tile_size=256, overlap=64, seam_rule=False))
    assert [len(m) for m in _match(plain.boxes_px, truth)] != [1] * len(truth)  # NMS alone keeps cut halves


def test_two_tile_sizes_agree_on_objects_away_from_the_raster_border(tmp_path):
    rng = np.random.default_rng(5)
    rects = []
    while len(rects) < 14:
        cx, cy = rng.uniform(40, 560, 2)
        if all(np.hypot(cx - r[0], cy - r[1]) > 70 for r in rects):
            rects.append((cx, cy, rng.uniform(20, 48), rng.uniform(8, 16), rng.uniform(-1.4, 1.4),
                          [RED, GREEN, BLUE][len(rects) % 3]))
    path = write_raster(tmp_path / "many.tif", scene(600, 600, rects))
    a = detect_raster(path, BrightObjectDetector(), RunSpec(tile_size=256, overlap=96))
    b = detect_raster(path, BrightObjectDetector(), RunSpec(tile_size=384, overlap=128))
    assert len(a) == len(b) == 14
    order_a = np.lexsort((a.boxes_px[:, 1], a.boxes_px[:, 0]))
    order_b = np.lexsort((b.boxes_px[:, 1], b.boxes_px[:, 0]))
    assert np.allclose(a.boxes_px[order_a], b.boxes_px[order_b], atol=1e-3)
    assert a.class_ids[order_a].tolist() == b.class_ids[order_b].tolist()


def test_polygons_are_the_box_corners_through_the_geotransform(tmp_path):
    img = scene(200, 300, [(120.0, 80.0, 40.0, 12.0, 0.5, RED)])
    path = write_raster(tmp_path / "geo.tif", img, transform=TRANSFORM)
    det = BrightObjectDetector()
    result = detect_raster(path, det, RunSpec(tile_size=512, overlap=64))
    assert det.shapes == [(512, 512, 3)]  # padded to a full tile only because the raster is smaller
    assert len(result) == 1
    expected = apply_affine(TRANSFORM, box_corners(result.boxes_px))
    assert np.allclose(result.polygons, expected)
    assert result.length_m[0] == pytest.approx(20 / 0.9996, abs=0.6)
    assert result.source.endswith("geo.tif") and result.classes == ["red", "green", "blue"]


def test_area_of_interest_skips_tiles_and_drops_outside_centres(tmp_path):
    rects = [(60.0, 60.0, 30.0, 10.0, 0.0, RED), (440.0, 60.0, 30.0, 10.0, 0.0, GREEN),
             (60.0, 440.0, 30.0, 10.0, 0.0, BLUE), (250.0, 60.0, 30.0, 10.0, 0.0, RED)]
    path = write_raster(tmp_path / "aoi.tif", scene(512, 512, rects), transform=TRANSFORM)
    # the left quarter-strip in map coordinates: x 0..140 px, all rows
    x0, y1 = TRANSFORM * (0, 0)
    x1, y0 = TRANSFORM * (140, 512)
    det = BrightObjectDetector()
    result = detect_raster(path, det, RunSpec(tile_size=128, overlap=32, aoi=f"{x0},{y0},{x1},{y1}"))
    assert sorted(result.boxes_px[:, 1].round().tolist()) == [60.0, 440.0]
    assert sum(det.calls) < 25  # 25 tiles in the raster; only the AOI's columns were run
    # the same box given in WGS 84 degrees
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs = osr.CoordinateTransformation(srs, wgs)
    (lon0, lat0, _), (lon1, lat1, _) = to_wgs.TransformPoint(x0, y0), to_wgs.TransformPoint(x1 - 10, y1)
    result = detect_raster(path, BrightObjectDetector(),
                           RunSpec(tile_size=128, overlap=32,
                                         aoi=f"{lon0},{lat0},{lon1},{lat1},EPSG:4326"))
    assert sorted(result.boxes_px[:, 1].round().tolist()) == [60.0, 440.0]
    # polygons from a vector file
    gpkg = tmp_path / "aoi.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg))
    layer = ds.CreateLayer("aoi", srs=srs, geom_type=ogr.wkbPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    xa, ya = TRANSFORM * (400, 0)
    xb, yb = TRANSFORM * (512, 120)
    feature.SetGeometry(ogr.CreateGeometryFromWkt(
        f"POLYGON(({xa} {ya},{xb} {ya},{xb} {yb},{xa} {yb},{xa} {ya}))"))
    layer.CreateFeature(feature)
    ds = None
    for spec in (str(gpkg), f"{gpkg}|layername=aoi"):
        options = RunSpec(tile_size=128, overlap=32, aoi=spec)
        result = detect_raster(path, BrightObjectDetector(), options)
        assert result.boxes_px[:, :2].round().tolist() == [[440.0, 60.0]]
    with pytest.raises(UserError, match="no layer named"):
        detect_raster(path, BrightObjectDetector(), RunSpec(aoi=f"{gpkg}|layername=nope"))
    with pytest.raises(UserError, match="does not overlap"):
        detect_raster(path, BrightObjectDetector(), RunSpec(aoi="0,0,10,10"))


def test_processing_resolution_maps_detections_back_to_native_pixels(tmp_path):
    truth = np.array([[200.0, 160.0, 80.0, 24.0, 0.0], [420.0, 300.0, 60.0, 30.0, 0.0]])
    img = scene(400, 512, [(*b, RED) for b in truth])
    path = write_raster(tmp_path / "fine.tif", img, transform=TRANSFORM)  # 0.5 m pixels
    det = BrightObjectDetector(threshold=140)
    result = detect_raster(path, det, RunSpec(tile_size=128, overlap=32, gsd=1.0))
    assert det.shapes[0] == (128, 128, 3)
    assert len(result) == 2
    order = np.argsort(result.boxes_px[:, 0])
    assert np.allclose(result.boxes_px[order, :4], truth[:, :4], atol=2.0)
    assert result.pixel_size_m == 1.0


def test_windows_without_valid_pixels_never_reach_the_network(tmp_path):
    img = scene(256, 512, [(64.0, 64.0, 30.0, 10.0, 0.0, RED)])
    img[:, 256:] = 0
    path = write_raster(tmp_path / "half.tif", img, nodata=0)
    det = BrightObjectDetector()
    seen = []
    result = detect_raster(path, det, RunSpec(tile_size=128, overlap=0, batch_size=3),
                           progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == sorted(set(d for d, _ in seen))
    assert sum(det.calls) == 4 and max(det.calls) <= 3  # the 4 nodata tiles were skipped
    assert result.tiles_total == 8 and result.tiles_skipped == 4 and len(result) == 1


def test_cancel_returns_what_was_found_so_far_marked_partial(tmp_path):
    rects = [(40.0 + 128 * i, 60.0, 30.0, 10.0, 0.0, RED) for i in range(4)]
    path = write_raster(tmp_path / "c.tif", scene(128, 512, rects))
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        cancel.set()

    result = detect_raster(path, BrightObjectDetector(),
                           RunSpec(tile_size=128, overlap=0, batch_size=1),
                           progress=progress, cancel=cancel)
    assert result.partial and seen[0] == (1, 4)
    assert result.tiles_done < 4 and 1 <= len(result) < 4


def test_thresholds_go_to_the_detector_with_each_call_and_never_stick(tmp_path):
    path = write_raster(tmp_path / "t.tif", scene(64, 64, [(30.0, 30.0, 20.0, 8.0, 0.0, RED)]))
    det = BrightObjectDetector()
    strict = detect_raster(path, det, RunSpec(tile_size=64, overlap=0, score_threshold=0.95,
                                              nms_iou=0.3, max_detections=7))
    assert len(strict) == 0
    assert det.thresholds[-1] == Thresholds(score=0.95, nms_iou=0.3, max_detections=7)
    vars_before = dict(vars(det))
    vars_before.pop("thresholds"), vars_before.pop("calls"), vars_before.pop("shapes")
    loose = detect_raster(path, det, RunSpec(tile_size=64, overlap=0))
    assert len(loose) == 1  # the earlier run's threshold did not stay on the shared detector
    assert det.thresholds[-1].score == 0.05  # the global default: this detector has no card
    after = {k: v for k, v in vars(det).items() if k not in ("thresholds", "calls", "shapes")}
    assert after == vars_before


def test_the_card_normalisation_reaches_the_detector(tmp_path):
    path = write_raster(tmp_path / "n.tif", scene(64, 64, []))
    det = BrightObjectDetector()
    card = ModelDefaults(mean=(10.0, 20.0, 30.0), std=(2.0, 3.0, 4.0), channel_order="BGR")
    detect_raster(path, det, RunSpec(tile_size=64, overlap=0).resolve(card))
    assert det.normalizations[-1] == Normalization((10.0, 20.0, 30.0), (2.0, 3.0, 4.0), "BGR")


def test_class_filter_keeps_only_the_named_classes_and_rejects_unknown_names(tmp_path):
    truth = [(30.0, 30.0, 20.0, 8.0, 0.0, RED), (90.0, 90.0, 20.0, 8.0, 0.0, BLUE)]
    path = write_raster(tmp_path / "c.tif", scene(128, 128, truth))
    result = detect_raster(path, BrightObjectDetector(), RunSpec(tile_size=128, overlap=0, classes=("blue",)))
    assert result.class_ids.tolist() == [2]
    with pytest.raises(UserError, match="no class 'bleu'.*red, green, blue"):
        detect_raster(path, BrightObjectDetector(), RunSpec(classes=("bleu",)))


def test_real_reduced_checkpoint_end_to_end_matches_a_direct_predict(tmp_path, golden_dir):
    from qgis_unravel import load_detector

    detector = load_detector(golden_dir / "reduced_model.pth", "cpu")
    detector.rpn_nms_pre = detector.rpn_max_proposals = 300  # fewer proposals: a faster test
    img = scene(128, 128, [(60.0, 50.0, 50.0, 16.0, 0.4, RED), (30.0, 100.0, 30.0, 10.0, -0.6, GREEN)])
    path = write_raster(tmp_path / "real.tif", img, transform=TRANSFORM)
    result = detect_raster(path, detector, RunSpec(tile_size=128, overlap=32, score_threshold=0.3))
    direct = detector.predict([img], thresholds=Thresholds(score=0.3))[0]
    assert len(result) == len(direct["scores"]) > 0
    order = np.argsort(-direct["scores"], kind="stable")
    assert np.allclose(result.scores, direct["scores"][order], atol=1e-6)
    assert np.allclose(result.boxes_px, direct["boxes"][order], atol=1e-3)
    assert result.classes == list(detector.classes)


def test_any_gdal_raster_works_for_example_a_vrt_with_overviews(tmp_path):
    from osgeo import gdal

    truth = [(100.0, 60.0, 40.0, 12.0, 0.2, RED), (200.0, 150.0, 30.0, 10.0, -0.4, BLUE)]
    tif = write_raster(tmp_path / "base.tif", scene(256, 320, truth).astype(np.uint16) * 10)
    ds = gdal.Open(str(tif), gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2, 4])  # the stretch then comes from the overviews
    ds = None
    vrt = tmp_path / "scene.vrt"
    gdal.BuildVRT(str(vrt), [str(tif)]).FlushCache()
    result = detect_raster(vrt, BrightObjectDetector(), RunSpec(tile_size=128, overlap=32))
    assert sorted(result.class_ids.tolist()) == [0, 2]
    assert np.allclose(sorted(result.boxes_px[:, 0]), [100.0, 200.0], atol=1.0)


def test_tiling_defaults_come_from_the_model_and_fp16_is_a_no_op_off_cuda():
    import contextlib

    from qgis_unravel.engine.detect import _autocast, resolved_for

    def tiling(det, spec):
        resolved = resolved_for(det, spec)
        return resolved.tile_size, resolved.overlap

    det = BrightObjectDetector(tile_size=800, overlap=150)
    assert tiling(det, RunSpec()) == (800, 150)
    assert tiling(det, RunSpec(tile_size=256)) == (256, 64)  # overlap shrinks with the tile
    assert tiling(det, RunSpec(tile_size=256, overlap=100)) == (256, 100)
    pinned = RunSpec(tile_size=300).resolve(ModelDefaults(tile_size=600, overlap=40))
    assert tiling(det, pinned) == (300, 40)  # a resolved spec is never resolved again
    det.info = {}
    assert tiling(det, RunSpec()) == (1024, 200)
    assert isinstance(_autocast(det, True), contextlib.nullcontext)
