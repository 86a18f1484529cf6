"""Does a loaded checkpoint really hold the model its card describes?

A published link can point at the wrong file (the LEGNet README links its FAIR1M model to a
file named after DOTA-v1.5, for instance). Checking the loaded network against the card turns
such a mix-up into a clear message instead of wrong class names on a map. Works on the
``detector.info`` dict only, so this module needs no torch.
"""

from __future__ import annotations

from typing import Any, Mapping

from .cards import Card
from .errors import ZooError


def card_mismatches(card: Card, info: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the card and ``detector.info`` (empty when they agree)."""
    arch = card.architecture
    problems = []
    backbone = info.get("backbone")
    if backbone is not None and str(backbone).lower() != arch.backbone.lower():
        problems.append(f"backbone is {backbone}, the card says {arch.backbone}")
    classes = info.get("num_classes")
    if classes is not None and int(classes) != card.num_classes:
        problems.append(f"it has {classes} classes, the card lists {card.num_classes}")
    stem = info.get("stem_width")
    if stem is not None and int(stem) != arch.stem_dim:
        problems.append(f"stem width is {stem}, the card says {arch.stem_dim}")
    depths = info.get("depths")
    if depths and tuple(int(d) for d in depths) != tuple(arch.depths):
        problems.append(f"stage depths are {tuple(depths)}, the card says {tuple(arch.depths)}")
    fpn = info.get("fpn_width")
    if fpn is not None and int(fpn) != arch.neck_channels:
        problems.append(f"FPN width is {fpn}, the card says {arch.neck_channels}")
    return problems


def apply_card(detector: Any, card: Card) -> Any:
    """Check the detector against its card, then give it the card's class names.

    Raises ZooError listing every difference: a checkpoint that is not what its card promises
    must not be used under that card's name.
    """
    problems = card_mismatches(card, getattr(detector, "info", {}) or {})
    if problems:
        source = getattr(detector, "info", {}).get("checkpoint", "the checkpoint")
        raise ZooError(f"{source} does not match model card {card.id}: {'; '.join(problems)}. "
                       "The file may be the wrong one; delete it from the cache and download again, "
                       "or use it directly with --model PATH (without the card).")
    detector.classes = list(card.classes)
    return detector
