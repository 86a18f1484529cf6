"""Class-balanced chip sampling (repeat factors as in LVIS / mmdet's ClassBalancedDataset)."""

import math

import numpy as np
import pytest

from qgis_unravel.training.balance import (
    RepeatedChips,
    chip_repeats,
    class_balanced,
    class_counts,
    class_repeat_factors,
)
from qgis_unravel.training.chips import Chip


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


class _Tiny:
    """A stand-in ChipDataset: chips, classes and an rng, items that name their chip."""

    def __init__(self, labels):
        self.chips = [Chip(0, 0, 0, 32, np.zeros((len(lab), 5)), np.asarray(lab)) for lab in labels]
        self.classes = ["a", "b", "c", "d"]
        self.rng = None

    def __len__(self):
        return len(self.chips)

    def __getitem__(self, i):
        return i

    def num_objects(self):
        return sum(len(c.labels) for c in self.chips)


def test_repeated_view_lists_chips_and_forwards_the_rest():
    base = _Tiny(_labels())
    view = class_balanced(base, threshold=0.5)
    assert len(view) == 7 + 2 + 2 + 3
    assert [view[i] for i in range(len(view))] == [0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 8, 9, 9, 9]
    assert view.num_objects() == base.num_objects()
    view.rng = "seeded"  # the trainer reseeds the dataset's rng through the view
    assert base.rng == "seeded"
    counts = class_counts(view, 4)
    assert counts.tolist() == [7 * 2 + 2 * 1 + 2 * 2 + 3 * 1, 2 * 1 + 2 * 1, 3, 0]
    assert class_counts(base, 4).tolist() == [7 * 2 + 1 + 2 + 1, 2, 1, 0]


def test_repeat_counts_must_match_the_dataset():
    with pytest.raises(ValueError, match="repeat counts"):
        RepeatedChips(_Tiny(_labels()), [1, 2])
