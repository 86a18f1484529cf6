"""DOTA-style evaluation checked against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qgis_unravel.training.ap import average_precision
from qgis_unravel.training.evaluate import ImageDetections, ImageTruth, evaluate, format_table
from qgis_unravel.training.matching import tp_fp


def _dets(rows):
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return ImageDetections(rows[:, :5], rows[:, 5], rows[:, 6].astype(int))


def test_eleven_point_ap_of_a_hand_made_curve():
    # Two objects; detections by score: hit, miss, hit -> recall .5 .5 1, precision 1 .5 2/3.
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    # Levels 0..0.5 (6 of them) see precision 1, levels 0.6..1.0 (5) see 2/3.
    assert average_precision(recall, precision, "11points") == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_area_ap_of_a_hand_made_curve():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    assert average_precision(recall, precision, "area") == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_unknown_ap_mode_is_refused():
    with pytest.raises(ValueError, match="unknown AP mode"):
        average_precision(np.ones(1), np.ones(1), "voc12")


def test_end_to_end_map_matches_the_hand_computation():
    gts = ImageTruth(np.array([[10, 10, 8, 4, 0.0], [40, 40, 8, 4, 0.0]]), np.array([0, 0]))
    dets = _dets(
        [
            [10, 10, 8, 4, 0.0, 0.9, 0],  # hit
            [70, 70, 8, 4, 0.0, 0.8, 0],  # nothing there
            [40, 40, 8, 4, 0.0, 0.7, 0],  # hit
        ]
    )
    result = evaluate([dets], [gts], ["car"])
    assert result.mean_ap == pytest.approx((6 + 5 * 2 / 3) / 11)
    area = evaluate([dets], [gts], ["car"], mode="area")
    assert area.mean_ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert result.classes[0].num_gts == 2 and result.classes[0].num_dets == 3


def test_iou_threshold_uses_rotated_iou():
    # Same size, shifted by half a width: IoU = 32 / (2*64 - 32) = 1/3.
    gt = np.array([[20, 20, 8, 8, 0.0]])
    shifted = np.array([[24, 20, 8, 8, 0.0, 0.9]])
    tp, fp = tp_fp(shifted, gt, iou_thr=0.5)
    assert (tp.tolist(), fp.tolist()) == ([0.0], [1.0])
    tp, fp = tp_fp(shifted, gt, iou_thr=0.3)
    assert (tp.tolist(), fp.tolist()) == ([1.0], [0.0])


def test_the_same_box_described_turned_by_90_degrees_matches():
    gt = np.array([[50, 50, 30, 10, 0.2]])
    same = np.array([[50, 50, 10, 30, 0.2 - math.pi / 2, 0.8]])
    tp, _ = tp_fp(same, gt)
    assert tp.tolist() == [1.0]


def test_a_second_detection_of_one_object_is_a_false_positive():
    gt = np.array([[50, 50, 30, 10, 0.0]])
    dets = np.array([[50, 50, 30, 10, 0.0, 0.6], [51, 50, 30, 10, 0.0, 0.9]])
    tp, fp = tp_fp(dets, gt)
    # The higher score (row 1) takes the object; row 0 is the duplicate.
    assert tp.tolist() == [0.0, 1.0] and fp.tolist() == [1.0, 0.0]


def test_ignored_objects_neither_count_nor_penalise():
    gt = np.array([[50, 50, 30, 10, 0.0], [10, 10, 6, 6, 0.0]])
    dets = np.array([[10, 10, 6, 6, 0.0, 0.9]])
    tp, fp = tp_fp(dets, gt, ignored=np.array([False, True]))
    assert tp.tolist() == [0.0] and fp.tolist() == [0.0]


def test_classes_without_objects_stay_out_of_the_mean():
    gts = ImageTruth(np.array([[10, 10, 8, 4, 0.0]]), np.array([0]))
    dets = _dets([[10, 10, 8, 4, 0.0, 0.9, 0], [30, 30, 8, 4, 0.0, 0.9, 1]])
    result = evaluate([dets], [gts], ["car", "ship"])
    assert result.classes[1].ap == 0.0 and result.classes[1].num_gts == 0
    assert result.mean_ap == pytest.approx(1.0)


def test_detections_are_pooled_over_images_by_score():
    truths = [ImageTruth(np.array([[10, 10, 8, 4, 0.0]]), np.array([0])) for _ in range(2)]
    # Image 0: a confident false alarm; image 1: a weaker hit. Pooled: FP then TP.
    dets = [_dets([[60, 60, 8, 4, 0.0, 0.9, 0]]), _dets([[10, 10, 8, 4, 0.0, 0.5, 0]])]
    result = evaluate(dets, truths, ["car"], mode="area")
    # recall [0, .5], precision [0, .5] -> area 0.5 * 0.5
    assert result.mean_ap == pytest.approx(0.25)


def test_missed_objects_cap_recall():
    gts = ImageTruth(np.array([[10, 10, 8, 4, 0.0], [40, 40, 8, 4, 0.0]]), np.array([0, 0]))
    result = evaluate([_dets([[10, 10, 8, 4, 0.0, 0.9, 0]])], [gts], ["car"])
    assert result.classes[0].final_recall == pytest.approx(0.5)
    assert result.mean_ap == pytest.approx(6 / 11)


def test_table_lists_every_class_and_the_map():
    gts = ImageTruth(np.array([[10, 10, 8, 4, 0.0]]), np.array([0]))
    result = evaluate([_dets([[10, 10, 8, 4, 0.0, 0.9, 0]])], [gts], ["small-vehicle", "ship"])
    table = format_table(result)
    assert "small-vehicle" in table and "ship" in table and "mAP" in table and "1.000" in table


def test_pr_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from qgis_unravel.training.prplot import plot_pr

    gts = ImageTruth(np.array([[10, 10, 8, 4, 0.0], [40, 40, 8, 4, 0.0]]), np.array([0, 0]))
    dets = _dets([[10, 10, 8, 4, 0.0, 0.9, 0], [70, 70, 8, 4, 0.0, 0.8, 0]])
    path = plot_pr(evaluate([dets], [gts], ["car"]), tmp_path / "pr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
