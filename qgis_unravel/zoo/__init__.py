"""The model zoo: model cards, verified downloads into the user cache, and ``--model`` resolution.

Nothing here imports torch, so the QGIS plugin can list models (``list_cards``) and download
them; loading the weights is the detector's job (``qgis_unravel.load_detector``).
"""

from __future__ import annotations

from .cache import cache_root, cache_status, license_accepted, mark_license_accepted, weights_path
from .cards import Card, get_card, list_cards, load_card
from .compat import apply_card, card_mismatches
from .errors import (
    CardError,
    ChecksumMismatchError,
    DownloadCancelled,
    DownloadError,
    LicenseNotAcceptedError,
    OfflineError,
    UnknownModelError,
    WeightsUnavailableError,
    ZooError,
)
from .progress import ProgressBar, console_confirm
from .resolve import ensure_weights, resolve_model

__all__ = [
    "Card", "CardError", "ChecksumMismatchError", "DownloadCancelled", "DownloadError",
    "LicenseNotAcceptedError", "OfflineError", "ProgressBar", "UnknownModelError",
    "WeightsUnavailableError", "ZooError", "apply_card", "cache_root", "cache_status",
    "card_mismatches", "console_confirm", "ensure_weights", "get_card", "license_accepted",
    "list_cards", "load_card", "mark_license_accepted", "resolve_model", "weights_path",
]
