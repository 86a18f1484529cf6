"""DOTA tooling rules pinned against hand-computed cases: labelTxt parsing, split windows, the
truncation rule, patch names, merging patch detections, polygon IoU and Task1 AP."""

from __future__ import annotations

import numpy as np
import pytest

from qgis_unravel.training.dota.classes import DOTA_V10, DOTA_V15, DOTA_V20, dota_classes
from qgis_unravel.training.dota.labeltxt import DotaFormatError, DotaObjects, format_labeltxt, parse_labeltxt
from qgis_unravel.training.dota.merge import Detections, merge_patches
from qgis_unravel.training.dota.polygon import iof_window, polygon_iou
from qgis_unravel.training.dota.split import (
    SPLITS,
    axis_starts,
    parse_patch_name,
    patch_name,
    sliding_windows,
    window_objects,
)
from qgis_unravel.training.dota.task1 import evaluate_task1, read_submission, write_submission

LABEL_TEXT = """imagesource:GoogleEarth
gsd:0.146343590398
10 10 50 10 50 30 10 30 plane 0
100 100 140 100 140 120 100 120 small-vehicle 1
200 200 260 200 260 230 200 230 ship
"""


def test_labeltxt_header_classes_and_difficulty():
    obj = parse_labeltxt(LABEL_TEXT)
    assert obj.source == "GoogleEarth" and obj.gsd == pytest.approx(0.146343590398)
    assert obj.names == ["plane", "small-vehicle", "ship"]
    assert obj.difficulty.tolist() == [0, 1, 0]  # a missing flag means not difficult
    assert obj.polys[1].tolist() == [100, 100, 140, 100, 140, 120, 100, 120]
    again = parse_labeltxt(format_labeltxt(obj, header=True))
    assert again.names == obj.names and np.array_equal(again.polys, obj.polys) and again.gsd == obj.gsd


def test_labeltxt_null_gsd_and_bad_line():
    assert parse_labeltxt("imagesource:GF2\ngsd:null\n").gsd is None
    with pytest.raises(DotaFormatError, match="line 1"):
        parse_labeltxt("1 2 3 plane 0\n")


def test_class_lists():
    assert len(DOTA_V10) == 15 and DOTA_V10[0] == "plane" and DOTA_V10[9] == "storage-tank"
    assert DOTA_V15 == DOTA_V10 + ("container-crane",)
    assert DOTA_V20[-2:] == ("airport", "helipad") and len(DOTA_V20) == 18
    assert dota_classes("v1.5") == DOTA_V15 and dota_classes("2") == DOTA_V20
    with pytest.raises(ValueError, match="unknown DOTA version"):
        dota_classes("3.0")


def test_window_starts_by_hand():
    # 2000 px wide, windows of 1024 with gap 200: step 824, ceil(976 / 824 + 1) = 3 windows,
    # the third (1648) moved back to 2000 - 1024 = 976
    assert axis_starts(2000, 1024, 824) == [0, 824, 976]
    assert axis_starts(1024, 1024, 824) == [0]
    assert axis_starts(1025, 1024, 824) == [0, 1]
    assert axis_starts(800, 1024, 824) == [0]
    win = sliding_windows(2000, 1000, [(1024, 200)])
    # x-major order; the 1000 px high image fits one row (window rate 1000/1024 > 0.6)
    assert win.tolist() == [[0, 0, 1024, 1024], [824, 0, 1848, 1024], [976, 0, 2000, 1024]]


def test_small_image_keeps_its_best_window():
    # 300 x 200 px in 1024 windows: rate 0.057 < 0.6, but the best windows are always kept
    assert sliding_windows(300, 200, [(1024, 200)]).tolist() == [[0, 0, 1024, 1024]]


def test_multiscale_windows():
    assert SPLITS["ss"].windows_sizes() == [(1024, 200)]
    # rates 0.5 / 1.0 / 1.5 change the window (2048, 1024, 682) and the gap (1000, 500, 333)
    assert SPLITS["ms"].windows_sizes() == [(2048, 1000), (1024, 500), (682, 333)]
    win = sliding_windows(1500, 1500, SPLITS["ms"].windows_sizes())
    sizes = sorted(set((win[:, 2] - win[:, 0]).tolist()))
    # the 2048 window is 1500^2 / 2048^2 = 0.536 image, not more than 0.6: dropped, since
    # other windows pass; 1024: 2 x 2 (step 524); 682: ceil(818 / 349 + 1) = 4 -> 4 x 4
    assert sizes == [682, 1024]
    assert len(win) == 4 + 16


def _square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def test_truncation_rule_by_hand():
    objects = DotaObjects(
        np.array(
            [
                _square(10, 10, 50, 30),  # inside
                _square(70, 10, 110, 50),  # 30 of 40 px wide inside: 0.75 -> kept, truncated
                _square(72, 60, 112, 90),  # 28 / 40 = 0.7 -> kept (>= 0.7), truncated
                _square(80, 10, 120, 50),  # 20 / 40 = 0.5 -> not in this window
            ],
            dtype=np.float64,
        ),
        ["plane", "ship", "ship", "plane"],
        np.array([1, 0, 1, 0]),
    )
    assert iof_window(objects.polys, (0, 0, 100, 100)) == pytest.approx([1.0, 0.75, 0.7, 0.5])
    got = window_objects(objects, (0, 0, 100, 100))
    assert got.names == ["plane", "ship", "ship"]
    assert got.difficulty.tolist() == [1, 2, 2]  # a whole object keeps its flag
    # a shifted window translates the kept polygons (not clipped)
    moved = window_objects(objects, (60, 0, 160, 100))
    assert moved.names == ["ship", "ship", "plane"]
    assert moved.polys[0].tolist() == _square(10, 10, 50, 50)
    assert moved.difficulty.tolist() == [0, 1, 0]


def test_patch_names():
    assert patch_name("P0003", 1024, 824, 0) == "P0003__1024__824___0"
    assert parse_patch_name("P0003__1024__824___0.png") == ("P0003", 1024, 824, 0)
    assert parse_patch_name("my__image__682__349___698") == ("my__image", 682, 349, 698)
    with pytest.raises(DotaFormatError):
        parse_patch_name("P0003.png")


def test_merge_shifts_and_suppresses_across_patches():
    # the same plane seen by two patches (offsets 0 and 824), plus a ship only in the second
    a = Detections(np.array([[900.0, 50, 60, 20, 0]]), np.array([0.9]), np.array([0]))
    b = Detections(
        np.array([[77.0, 51, 60, 20, 0], [300, 300, 40, 10, 0.3]]), np.array([0.8, 0.7]), np.array([0, 6])
    )
    merged = merge_patches([("P1", 0, 0, a), ("P1", 824, 0, b)])["P1"]
    order = np.argsort(-merged.scores)
    assert merged.scores[order].tolist() == pytest.approx([0.9, 0.7])
    assert merged.labels[order].tolist() == [0, 6]
    assert merged.boxes[order][1, :2].tolist() == [1124, 300]


def test_merge_keeps_boxes_below_the_merge_iou():
    # two planes overlapping by IoU 1/19 < 0.1 are both kept
    a = Detections(np.array([[50.0, 50, 100, 20, 0]]), np.array([0.9]), np.array([0]))
    b = Detections(np.array([[145.0, 50, 100, 20, 0]]), np.array([0.8]), np.array([0]))
    assert len(merge_patches([("P", 0, 0, a), ("P", 0, 0, b)])["P"]) == 2


def test_polygon_iou_by_hand():
    unit = np.array([_square(0, 0, 1, 1)], dtype=np.float64)
    half = np.array([_square(0.5, 0, 1.5, 1), _square(5, 5, 6, 6)], dtype=np.float64)
    assert polygon_iou(unit, half)[0] == pytest.approx([1 / 3, 0.0])
    diamond = np.array([[1.0, 0, 2, 1, 1, 2, 0, 1]])  # area 2, inside the 2x2 square
    assert polygon_iou(np.array([_square(0, 0, 2, 2)], dtype=np.float64), diamond)[0, 0] == pytest.approx(0.5)


def test_task1_ap_by_hand():
    # two planes and a difficult one; detections by score: TP, FP, on the difficult one
    # (ignored), TP. Recall .5 .5 .5 1, precision 1 .5 .5 2/3 -> 11-point AP (6 * 1 + 5 * 2/3) / 11
    truth = {
        "P1": DotaObjects(
            np.array([_square(0, 0, 10, 10), _square(100, 0, 110, 10), _square(200, 0, 210, 10)], float),
            ["plane", "plane", "plane"],
            np.array([0, 0, 1]),
        )
    }
    polys = np.array(
        [_square(0, 0, 10, 10), _square(50, 50, 60, 60), _square(200, 0, 210, 10), _square(101, 0, 110, 10)],
        float,
    )
    dets = {"P1": (polys, np.array([0.9, 0.8, 0.7, 0.6]), np.zeros(4, dtype=np.int64))}
    result = evaluate_task1(dets, truth, ["plane", "ship"])
    plane = result.classes[0]
    assert plane.num_gts == 2 and plane.num_dets == 4
    assert plane.ap == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert result.mean_ap == pytest.approx(plane.ap)  # ship has no objects: not averaged


def test_submission_files_round_trip(tmp_path):
    merged = {
        "P2": Detections(np.array([[50.0, 40, 20, 10, 0]]), np.array([0.75]), np.array([1])),
        "P1": Detections(np.zeros((0, 5)), np.zeros(0), np.zeros(0, dtype=np.int64)),
    }
    files = write_submission(tmp_path, merged, ["plane", "ship"])
    assert [f.name for f in files] == ["Task1_plane.txt", "Task1_ship.txt"]
    assert files[0].read_text() == ""
    assert files[1].read_text() == "P2 0.750000 40.00 35.00 60.00 35.00 60.00 45.00 40.00 45.00\n"
    back = read_submission(tmp_path, ["plane", "ship"])
    assert list(back) == ["P2"] and back["P2"][2].tolist() == [1]
