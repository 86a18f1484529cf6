"""A small DOTA-format dataset made from the project's synthetic scenes (``images/*.png`` and
``labelTxt/*.txt`` with the header lines), for tests and for trying the DOTA path without DOTA.

Every ``difficult_every``-th object is flagged difficult, so that the difficult rules are
exercised; the scenes' class names are DOTA v1.0 names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import numpy as np

from .images import write_image
from .labeltxt import DIFFICULT, DotaObjects, write_labeltxt
from .task1 import obb_polygons

PathLike = Union[str, Path]

GSD = 0.15


def write_synthetic_dota(
    out: PathLike, seeds: Iterable[int], size: int = 512, density: float = 1.0, difficult_every: int = 7
) -> int:
    """Write one image and label file per seed into ``out/images`` and ``out/labelTxt``; the
    number of objects written."""
    from ...synthetic import CLASS_NAMES, make_scene

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labelTxt").mkdir(parents=True, exist_ok=True)
    total = 0
    for seed in seeds:
        scene = make_scene(seed=seed, size=size, density=density)
        image_id = f"S{seed:04d}"
        write_image(out / "images" / f"{image_id}.png", scene.image)
        n = len(scene.labels)
        flags = np.zeros(n, dtype=np.int64)
        if difficult_every > 0:
            flags[difficult_every - 1 :: difficult_every] = DIFFICULT
        objects = DotaObjects(
            np.round(obb_polygons(scene.boxes), 1),
            [CLASS_NAMES[int(i)] for i in scene.labels],
            flags,
            GSD,
            "synthetic",
        )
        write_labeltxt(out / "labelTxt" / f"{image_id}.txt", objects, header=True)
        total += n
    return total
