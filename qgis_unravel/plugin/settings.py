"""The plugin's remembered choices, kept in QgsSettings under ``qgis_unravel/``.

One dataclass holds what the dialog shows, so the dialog, "Detect in view" and Processing all
start from the same defaults and the user's last choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from qgis.core import QgsSettings

PREFIX = "qgis_unravel/"


@dataclass
class Choices:
    """Every remembered option; field names are the QgsSettings keys."""

    model: str = ""
    device: str = "auto"
    tile: int = 1024
    overlap: int = 200
    batch: int = 0  # 0: automatic
    score: float = 0.3
    iou: float = 0.1
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
        values[item.name] = _coerce(raw, default)
    return Choices(**values)


def save(choices: Choices) -> None:
    settings = QgsSettings()
    for name, value in asdict(choices).items():
        settings.setValue(PREFIX + name, value)


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
