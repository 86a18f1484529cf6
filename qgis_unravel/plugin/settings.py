"""The plugin's remembered choices, kept in QgsSettings under ``qgis_unravel/``.

One dataclass holds what the dialog shows, so the dialog, "Detect in view" and Processing all
start from the same defaults and the user's last choices. The run knobs (tile, overlap, batch,
score, iou, gsd) are None until the user sets them: None means "the model's default", resolved
from the model card by the worker (the dialog shows the card's value meanwhile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from qgis.core import QgsSettings

PREFIX = "qgis_unravel/"
# knobs that may be empty ("the model's default") and their type when set
OPTIONAL = {"tile": int, "overlap": int, "batch": int, "score": float, "iou": float, "gsd": float}


@dataclass
class Choices:
    """Every remembered option; field names are the QgsSettings keys."""

    model: str = ""
    device: str = "auto"
    tile: Optional[int] = None
    overlap: Optional[int] = None
    batch: Optional[int] = None
    score: Optional[float] = None
    iou: Optional[float] = None
    gsd: Optional[float] = None
    classes: str = ""  # comma-separated class names; empty keeps all
    extent_mode: str = "layer"  # layer | canvas | drawn | polygons
    output_mode: str = "temporary"  # temporary | file
    output_path: str = ""
    output_layer: str = "detections"
    open_output: bool = True
    labels: bool = False
    worker_python: str = ""  # empty: auto-detect
    idle_s: int = 600


def load() -> Choices:
    """The remembered choices, with defaults for anything never saved or unreadable."""
    settings = QgsSettings()
    defaults = Choices()
    values = {}
    for item in fields(Choices):
        default = getattr(defaults, item.name)
        raw = settings.value(PREFIX + item.name, default)
        if item.name in OPTIONAL:
            values[item.name] = _optional(raw, OPTIONAL[item.name])
        else:
            values[item.name] = _coerce(raw, default)
    return Choices(**values)


def save(choices: Choices) -> None:
    settings = QgsSettings()
    for name, value in asdict(choices).items():
        settings.setValue(PREFIX + name, "" if value is None else value)


def _optional(raw: object, kind: type) -> object:
    """An optional knob: empty (or unreadable) means the model's default."""
    if raw is None or str(raw).strip() in ("", "None"):
        return None
    try:
        return kind(float(raw)) if kind is int else kind(raw)
    except (TypeError, ValueError):
        return None


def _coerce(raw: object, default: object) -> object:
    """QSettings gives strings back from ini files; turn them into the default's type."""
    if raw is None:
        return default
    try:
        if isinstance(default, bool):
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(float(raw))
        if isinstance(default, float):
            return float(raw)
    except (TypeError, ValueError):
        return default
    return str(raw)
