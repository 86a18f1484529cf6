"""The published training recipes as presets: the Oriented R-CNN DOTA-v1.0 single-scale le90
configs of UnravelNet-T/S (``ORCNN_unravelnet_*_fpn_le90_dota10val_ss_e36``) and LEGNet-T/S
(``orcnn_legnet_*_dota10_test_ss_e36``), starting from the ImageNet backbones of the model zoo.

What the configs fix and a recipe carries: backbone size; AdamW (lr 1.5e-4 UnravelNet, 2e-4 LEGNet;
betas 0.9/0.999; weight decay 0.05), gradient clipping at 35; linear warm-up over 500 iterations
from 1/3 of the lr; 36 epochs with x0.1 steps after epochs 24 and 33 (UnravelNet's
``schedule_3x_unravelnet``) or 13, 24 and 33 (LEGNet's ``schedule_3x``); 2 images per GPU;
SyncBN in the backbone; drop-path 0.1; the ss split (1024 px, gap 200); flips (h/v/diagonal,
1/4 each) and PolyRandomRotate (half the time, storage tanks and roundabouts by quarter turns);
all objects trained on, difficult ones included (mmrotate's ``difficulty=100``).

The schedule is epoch-based in the configs; here it becomes iterations once the dataset and the
number of GPUs are known: ``epochs * ceil(patches / (2 * GPUs))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .model import ModelSpec


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec
    backbone_card: str
    lr: float
    step_epochs: Tuple[int, ...]
    epochs: int = 36
    batch_per_gpu: int = 2
    warmup_iters: int = 500
    weight_decay: float = 0.05
    dota_version: str = "1.0"
    split: str = "ss"
    difficult: str = "keep"
    sync_bn: bool = True
    reported_map: float = 0.0
    config: str = ""

    def iterations(self, samples: int, world_size: int) -> Tuple[int, List[int]]:
        """(total iterations, lr step iterations) for a dataset of ``samples`` patches."""
        per_epoch = max(1, math.ceil(samples / (self.batch_per_gpu * world_size)))
        return self.epochs * per_epoch, [e * per_epoch for e in self.step_epochs]


UNRAVELNET_STEPS = (24, 33)
LEGNET_STEPS = (13, 24, 33)

RECIPES: Dict[str, Recipe] = {recipe.name: recipe for recipe in (
    Recipe(
        "unravelnet-t-dota10",
        ModelSpec("UnravelNet", stem_dim=32),
        "unravelnet-t-imagenet",
        1.5e-4,
        UNRAVELNET_STEPS,
        reported_map=78.51,
        config="configs/unravelnet/ORCNN_unravelnet_tiny_fpn_le90_dota10val_ss_e36.py",
    ),
    Recipe(
        "unravelnet-s-dota10",
        ModelSpec("UnravelNet", stem_dim=64),
        "unravelnet-s-imagenet",
        1.5e-4,
        UNRAVELNET_STEPS,
        reported_map=79.99,
        config="configs/unravelnet/ORCNN_unravelnet_small_fpn_le90_dota10val_ss_e36.py",
    ),
    Recipe(
        "legnet-t-dota10",
        ModelSpec("LEGNet", stem_dim=32),
        "legnet-t-imagenet",
        2e-4,
        LEGNET_STEPS,
        reported_map=79.37,
        config="configs/legnet/orcnn_legnet_tiny_dota10_test_ss_e36.py",
    ),
    Recipe(
        "legnet-s-dota10",
        ModelSpec("LEGNet", stem_dim=64),
        "legnet-s-imagenet",
        2e-4,
        LEGNET_STEPS,
        reported_map=80.03,
        config="configs/legnet/orcnn_legnet_small_dota10_test_ss_e36.py",
    ),
)}
