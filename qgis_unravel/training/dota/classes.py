"""The class lists of the DOTA releases, in the order mmrotate and the published models use."""

from __future__ import annotations

from typing import Dict, Tuple

from ...detector.config import DOTA_V1_CLASSES

DOTA_V10: Tuple[str, ...] = DOTA_V1_CLASSES  # the order of the published checkpoints
DOTA_V15: Tuple[str, ...] = DOTA_V10 + ("container-crane",)
DOTA_V20: Tuple[str, ...] = DOTA_V15 + ("airport", "helipad")

VERSIONS: Dict[str, Tuple[str, ...]] = {"1.0": DOTA_V10, "1.5": DOTA_V15, "2.0": DOTA_V20}

# Classes whose boxes are only turned by multiples of 90 degrees when augmenting (the configs'
# ``rect_classes=[9, 11]`` of PolyRandomRotate, by name so that any class list can use it).
RECT_CLASSES = ("storage-tank", "roundabout")


def dota_classes(version: str) -> Tuple[str, ...]:
    """The class list of DOTA ``version`` ("1.0", "1.5" or "2.0")."""
    key = str(version).lstrip("v")
    if key in ("1", "2"):
        key += ".0"
    if key not in VERSIONS:
        raise ValueError(f"unknown DOTA version {version!r}; choose one of {', '.join(VERSIONS)}")
    return VERSIONS[key]
