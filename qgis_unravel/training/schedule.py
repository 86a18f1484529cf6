"""mmcv's step learning-rate policy with linear warm-up, by iteration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class StepSchedule:
    """``base_lr`` scaled by ``gamma`` at each step; during warm-up, ramped linearly from
    ``warmup_ratio * lr`` (mmcv: ``lr * (1 - (1 - i / warmup_iters) * (1 - ratio))``)."""

    base_lr: float
    steps: Sequence[int]
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3.0

    def lr(self, iteration: int) -> float:
        """Learning rate of (0-based) ``iteration``."""
        lr = self.base_lr * self.gamma ** sum(1 for s in self.steps if iteration >= s)
        if iteration < self.warmup_iters:
            lr *= 1 - (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio)
        return lr


def default_steps(iterations: int) -> list:
    """The 3x schedule's decays (epochs 24 and 33 of 36), as fractions of the run."""
    return [int(iterations * 24 / 36), int(iterations * 33 / 36)]
