"""The models a user can pick, whether each can run now, and the card values the forms show.

Shared by the dialog and Processing; no QGIS import. A model "can run" when its weights are
here (bundled with the plugin or downloaded) or can be downloaded on first use; models whose
weights were never published are listed, marked so, and cannot be chosen for a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

NOT_PUBLISHED = "weights not published"


@dataclass(frozen=True)
class ModelEntry:
    id: str
    title: str
    runnable: bool
    why_not: str = ""  # for a model that cannot run: the short reason shown beside it
    classes: tuple[str, ...] = field(default_factory=tuple)
    gsd: Optional[float] = None  # the card's processing resolution (m/px), when it gives one
    summary: str = ""

    @property
    def label(self) -> str:
        return self.title if self.runnable else f"{self.title} ({self.why_not})"


def entry_for(card) -> ModelEntry:
    from ..zoo import cache_status

    availability = card.weights.availability
    status = cache_status(card)
    if status in ("bundled", "cached") or availability == "download":
        runnable, why = True, ""
    elif availability == "bundled":
        runnable, why = False, "weights missing from this installation"
    elif availability == "manual":
        runnable, why = False, "weights must be downloaded by hand"
    else:
        runnable, why = False, NOT_PUBLISHED
    return ModelEntry(card.id, card.title, runnable, why, tuple(card.classes), card_resolution(card),
                      card.summary)


def card_resolution(card) -> Optional[float]:
    """The processing resolution (m/px) a card gives: its ground resolution when that is a single
    value; None for a range or none (the raster's own pixels are used then)."""
    res = card.ground_resolution_m
    return res.min if res.min is not None and res.min == res.max else None


# The model a fresh install preselects: the UnravelNet demo, whose weights the plugin zip carries.
FIRST_CHOICE = "demo-unravelnet-synthetic"


def model_entries() -> list[ModelEntry]:
    """Every model card, runnable ones first (the UnravelNet demo, then other demos, first among
    those); no cards is not an error."""
    try:
        from ..zoo import list_cards

        cards = list_cards()
    except Exception:  # a broken card must not stop the dialog
        return []
    entries = [entry_for(card) for card in cards]
    return sorted(entries, key=lambda e: (not e.runnable, e.id != FIRST_CHOICE, not e.id.startswith("demo"),
                                          e.title))


def is_checkpoint_path(model: str) -> bool:
    return bool(model) and (model.endswith((".pth", ".pt")) or "/" in model or "\\" in model)


def default_model(entries: list[ModelEntry], remembered: str) -> str:
    """The remembered model when it can run (a checkpoint file that still exists counts), else
    the first runnable model, else ""."""
    import os

    by_id = {entry.id: entry for entry in entries}
    if remembered in by_id and by_id[remembered].runnable:
        return remembered
    if is_checkpoint_path(remembered) and os.path.isfile(remembered):
        return remembered
    return next((entry.id for entry in entries if entry.runnable), "")


# Engine messages name command-line flags; in QGIS the same thing is a field or a menu entry.
_FOR_QGIS = (
    (r"consider --gsd", "set the Processing resolution of the run"),
    (r"--gsd", "the Processing resolution"),
    (r"pass it with --model PATH", "choose it with \"Browse…\" beside Model"),
    (r"--model PATH", "a checkpoint file (\"Browse…\" beside Model)"),
    (r"'?qgis-unravel models info'?", "Raster > UnravelNet > Diagnostics…"),
    (r"--tile", "the Tile size"), (r"--overlap", "the Overlap"), (r"--batch", "the Batch size"),
    (r"--score", "the Score threshold"), (r"--iou", "the Merge IoU"), (r"--device", "the Device"),
    (r"--aoi", "the Extent"),
)


def for_qgis_user(text: str) -> str:
    """An engine message with its command-line wording replaced by the dialog's words."""
    for pattern, words in _FOR_QGIS:
        text = re.sub(pattern, words, text)
    return text


def card_gsd(model: str) -> Optional[float]:
    """``card_resolution`` of the model's card; None for a checkpoint file or an unknown name."""
    try:
        from ..zoo import get_card

        return card_resolution(get_card(model))
    except Exception:  # a local checkpoint, an unknown name or a broken card: no card value
        return None
