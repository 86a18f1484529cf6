"""Cards for ImageNet-pretrained backbones (the starting points of the published training
recipes), kept in ``models/backbones/`` so that they never appear among the detectors.

A backbone card has the detector cards' ``weights``, ``license`` and ``source`` sections (same
rules), plus the backbone's name and widths; its weights are fetched, verified and cached by the
same code as a detector's (``ensure_weights``), under ``<cache>/models/<id>/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from .cards import _ID_RE, CardError, License, Source, Weights, _Fields, _license, _source, _weights

SUPPORTED = ("UnravelNet", "LEGNet")


@dataclass(frozen=True)
class BackboneCard:
    id: str
    title: str
    backbone: str
    variant: str
    stem_dim: int
    depths: Tuple[int, ...]
    pretraining: str
    weights: Weights
    license: License
    citation: str
    source: Source

    def license_text(self) -> str:
        lic = self.license
        lines = [f"Licence of the weights of {self.id}: {lic.weights} ({lic.url})"]
        if lic.data:
            lines.append(f"Training data: {lic.data}")
        lines.append(lic.notice)
        return "\n".join(lines)


def backbone_card_from_dict(data: Any, where: str = "<memory>") -> BackboneCard:
    f = _Fields(data, where)
    card_id = f.string("id")
    if not _ID_RE.match(card_id):
        raise f.error("id", f"is {card_id!r}; use lower-case letters, digits, '.', '_' or '-'")
    card = BackboneCard(
        id=card_id,
        title=f.string("title", nonempty=True),
        backbone=f.choice("backbone", SUPPORTED),
        variant=f.string("variant", nonempty=True),
        stem_dim=f.integer("stem_dim", minimum=1),
        depths=f.int_list("depths", 4),
        pretraining=f.string("pretraining", nonempty=True),
        weights=_weights(f.obj("weights")),
        license=_license(f.obj("license")),
        citation=f.string("citation", nonempty=True),
        source=_source(f.obj("source")),
    )
    f.done()
    return card


def backbones_dir() -> Path:
    from ..paths import models_dir

    return models_dir() / "backbones"


def list_backbone_cards(folder: Optional[Path] = None) -> List[BackboneCard]:
    folder = Path(folder) if folder else backbones_dir()
    cards = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CardError(f"{path}: not readable JSON ({exc})") from None
        card = backbone_card_from_dict(data, str(path))
        if card.id != path.stem:
            raise CardError(f"{path}: id {card.id!r} does not match the file name")
        cards.append(card)
    return cards


def get_backbone_card(card_id: str, folder: Optional[Path] = None) -> BackboneCard:
    cards = {c.id: c for c in list_backbone_cards(folder)}
    if card_id not in cards:
        raise CardError(f"no backbone card {card_id!r}; known: {', '.join(sorted(cards))}")
    return cards[card_id]
