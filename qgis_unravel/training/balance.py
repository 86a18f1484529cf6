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


class RepeatedChips:
    """A view of a chip dataset in which chip ``i`` appears ``repeats[i]`` times.

    It forwards everything else (``rng``, ``classes``, ``num_objects`` ...) to the wrapped
    dataset, so the trainer uses it as it uses the dataset itself.
    """

    def __init__(self, dataset, repeats: Sequence[int]) -> None:
        if len(repeats) != len(dataset):
            raise ValueError(f"{len(repeats)} repeat counts for {len(dataset)} chips")
        self.dataset = dataset
        self.index = np.repeat(np.arange(len(dataset)), np.asarray(repeats, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.dataset[int(self.index[i])]

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value) -> None:
        if name in ("dataset", "index"):
            object.__setattr__(self, name, value)
        else:  # e.g. the trainer reseeding ``rng`` each iteration
            setattr(self.dataset, name, value)


def class_balanced(dataset, threshold: float) -> RepeatedChips:
    """Wrap a ChipDataset with repeat-factor sampling at ``threshold``."""
    labels = [chip.labels for chip in dataset.chips]
    return RepeatedChips(dataset, chip_repeats(labels, len(dataset.classes), threshold))


def class_counts(dataset, num_classes: int) -> np.ndarray:
    """Objects per class as the sampler shows them in one pass (repeats counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    chips = dataset.dataset.chips if isinstance(dataset, RepeatedChips) else dataset.chips
    index = dataset.index if isinstance(dataset, RepeatedChips) else np.arange(len(chips))
    for i in index:
        counts += np.bincount(chips[int(i)].labels, minlength=num_classes)[:num_classes]
    return counts
