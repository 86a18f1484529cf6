"""Class-balanced chip sampling (repeat factors as in LVIS / mmdet's ClassBalancedDataset)."""

import math

import numpy as np
import pytest

from qgis_unravel.training.balance import balanced_chips, chip_repeats, class_counts, class_repeat_factors
from qgis_unravel.training.chips import Chip
from qgis_unravel.training.dataset import ChipDataset


def _labels():
    # 10 chips: class 0 in all of them, class 1 in two, class 2 in one, class 3 nowhere
    chips = [np.array([0, 0])] * 7 + [np.array([0, 1]), np.array([1, 0, 0]), np.array([2, 0])]
    return chips


def test_factors_follow_the_square_root_rule():
    factors = class_repeat_factors(_labels(), 4, threshold=0.5)
    assert factors[0] == 1.0  # frequent classes are never repeated
    assert factors[1] == pytest.approx(math.sqrt(0.5 / 0.2))
    assert factors[2] == pytest.approx(math.sqrt(0.5 / 0.1))
    assert factors[3] == 1.0  # absent class: no factor to apply


def test_chip_repeats_take_the_rarest_class_rounded_up():
    repeats = chip_repeats(_labels(), 4, threshold=0.5)
    assert repeats == [1] * 7 + [2, 2, 3]  # ceil(1.58) = 2, ceil(2.24) = 3


def test_threshold_zero_changes_nothing_and_negative_is_refused():
    assert chip_repeats(_labels(), 4, threshold=0.0) == [1] * 10
    with pytest.raises(ValueError, match="threshold"):
        class_repeat_factors(_labels(), 4, threshold=-0.1)


def test_exact_square_factor_is_not_rounded_past_itself():
    # class 1 in 1 of 16 chips with t = 0.25: r = sqrt(4) = 2 exactly, listed twice, not three times
    labels = [np.array([0])] * 15 + [np.array([1])]
    assert chip_repeats(labels, 2, threshold=0.25) == [1] * 15 + [2]


def _chips(labels):
    return [Chip(0, 0, 0, 32, np.zeros((len(lab), 5)), np.asarray(lab)) for lab in labels]


def test_balanced_chips_repeat_rare_chips_in_order_and_counts_follow():
    chips = _chips(_labels())
    balanced = balanced_chips(chips, 4, threshold=0.5)
    assert len(balanced) == 7 + 2 + 2 + 3
    order = [next(i for i, c in enumerate(chips) if c is chip) for chip in balanced]
    assert order == [0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 8, 9, 9, 9]
    counts = class_counts(balanced, 4)
    assert counts.tolist() == [7 * 2 + 2 * 1 + 2 * 2 + 3 * 1, 2 * 1 + 2 * 1, 3, 0]
    assert class_counts(chips, 4).tolist() == [7 * 2 + 1 + 2 + 1, 2, 1, 0]


def test_chip_dataset_oversamples_in_place():
    dataset = ChipDataset.__new__(ChipDataset)  # the chip list only; no rasters needed
    dataset.chips, dataset.classes = _chips(_labels()), ["a", "b", "c", "d"]
    objects = dataset.num_objects()
    dataset.oversample_rare_classes(0.5)
    assert len(dataset) == 14 and dataset.num_objects() > objects
    dataset.oversample_rare_classes(0.0)  # off: nothing changes
    assert len(dataset) == 14
