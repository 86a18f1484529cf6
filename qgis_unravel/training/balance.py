"""Class-balanced chip sampling: chips holding rare classes are shown more often.

A survey rarely has as many ships as cars. The rule is the repeat-factor sampling of LVIS
(Gupta et al., 2019), which mmdet offers as ``ClassBalancedDataset``: with ``f(c)`` the
fraction of chips that contain class ``c`` and ``t`` the threshold,

    r(c) = max(1, sqrt(t / f(c)))        r(chip) = max of r(c) over the classes in the chip

and each chip is listed ``ceil(r(chip))`` times (mmdet's rounding). Classes in more than a
fraction ``t`` of the chips are never repeated; ``t = 0`` turns the rule off.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

from .chips import Chip


def class_repeat_factors(chip_labels: Sequence[np.ndarray], num_classes: int, threshold: float) -> np.ndarray:
    """``r(c)`` for every class (1 for classes absent from all chips)."""
    if threshold < 0:
        raise ValueError(f"the oversampling threshold must be >= 0, got {threshold}")
    n = max(len(chip_labels), 1)
    present = np.zeros(num_classes, dtype=np.float64)
    for labels in chip_labels:
        present[np.unique(np.asarray(labels, dtype=np.int64))] += 1
    freq = present / n
    factors = np.ones(num_classes, dtype=np.float64)
    seen = freq > 0
    factors[seen] = np.maximum(1.0, np.sqrt(threshold / freq[seen]))
    return factors


def chip_repeats(chip_labels: Sequence[np.ndarray], num_classes: int, threshold: float) -> List[int]:
    """How many times each chip is listed: ``ceil`` of its rarest class's factor."""
    factors = class_repeat_factors(chip_labels, num_classes, threshold)
    repeats = []
    for labels in chip_labels:
        labels = np.asarray(labels, dtype=np.int64)
        r = float(factors[labels].max()) if labels.size else 1.0
        repeats.append(int(math.ceil(r - 1e-9)))
    return repeats


def balanced_chips(chips: Sequence[Chip], num_classes: int, threshold: float) -> List[Chip]:
    """The chips with each one listed ``chip_repeats`` times, in their original order."""
    repeats = chip_repeats([chip.labels for chip in chips], num_classes, threshold)
    return [chip for chip, r in zip(chips, repeats) for _ in range(r)]


def class_counts(chips: Sequence[Chip], num_classes: int) -> np.ndarray:
    """Objects per class in one pass over ``chips`` (a chip listed twice counts twice)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for chip in chips:
        counts += np.bincount(chip.labels, minlength=num_classes)[:num_classes]
    return counts
