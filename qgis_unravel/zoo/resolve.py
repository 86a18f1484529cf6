"""From what a user typed after ``--model`` to a checkpoint file on disk.

A path that exists is used as it is (any mmrotate Oriented R-CNN checkpoint; the loader infers
the architecture). Anything else must be a card id: bundled weights come from models/, published
ones from the user cache, downloading them if needed, but only after the licence was accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Tuple

from .cache import (
    check_file,
    license_accepted,
    mark_license_accepted,
    read_record,
    verify_cached,
    weights_path,
)
from .cards import Card, list_cards, unknown_model_message
from .download import Progress, download, manual_hint
from .errors import LicenseNotAcceptedError, UnknownModelError, WeightsUnavailableError

Confirm = Callable[[Card], bool]


def resolve_model(name_or_path: str | Path, progress: Progress | None = None, *,
                  confirm: Optional[Confirm] = None, cards_dir: Path | None = None,
                  cache_dir: Path | None = None) -> Tuple[Path, Optional[Card]]:
    """Return ``(checkpoint path, card or None)``.

    ``progress(done, total)`` follows a download. ``confirm(card)`` is asked before the first
    download of a model whose licence was not accepted on this machine yet; when it is None such
    a download is refused with a message telling how to accept (``models download``).
    """
    text = str(name_or_path).strip()
    if not text:
        raise UnknownModelError("no model given: pass a model id (see 'qgis-unravel models list') "
                                "or the path of a checkpoint file")
    path = Path(text).expanduser()
    if path.is_dir():
        raise UnknownModelError(f"{path} is a folder; give the checkpoint file (.pth) inside it")
    if path.is_file():
        return path.resolve(), None
    cards = list_cards(cards_dir)
    card = next((c for c in cards if c.id == text), None)
    if card is None:
        if _looks_like_path(text):
            raise UnknownModelError(f"checkpoint file not found: {path}. Check the path, or use a "
                                    "model id from 'qgis-unravel models list'.")
        raise UnknownModelError(unknown_model_message(text, [c.id for c in cards]))
    return ensure_weights(card, progress, confirm=confirm, cards_dir=cards_dir, cache_dir=cache_dir), card


def _looks_like_path(text: str) -> bool:
    return any(sep in text for sep in ("/", "\\")) or text.lower().endswith((".pth", ".pt", ".ckpt"))


def ensure_weights(card: Card, progress: Progress | None = None, *, confirm: Optional[Confirm] = None,
                   cards_dir: Path | None = None, cache_dir: Path | None = None,
                   force: bool = False) -> Path:
    """The local weights of ``card``, fetched and verified when needed."""
    availability = card.weights.availability
    if availability == "bundled":
        return _bundled(card, cards_dir)
    dest = weights_path(card, cache_dir)
    if dest.is_file() and not force:
        verify_cached(card, dest)
        return dest
    if availability == "manual":
        raise WeightsUnavailableError(
            f"The weights of {card.id} cannot be downloaded automatically. {card.weights.note} "
            f"{manual_hint(card.weights.urls, dest)}".replace("  ", " "))
    if availability == "unpublished":
        raise WeightsUnavailableError(
            f"No checkpoint has been published for {card.id}. {card.weights.note} "
            f"If you have a compatible checkpoint, pass it with --model PATH or save it as {dest}.")
    _require_license(card, confirm, cache_dir)
    record = read_record(dest)
    expected = card.weights.sha256 or (record or {}).get("sha256")
    download(card.weights.urls, dest, sha256=expected, size=card.weights.size_bytes, progress=progress)
    return dest


def _bundled(card: Card, cards_dir: Path | None) -> Path:
    path = card.bundled_path(cards_dir)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"The weights of {card.id} should ship with qgis-unravel at {path}, but that file is "
            "missing (the QGIS plugin zip carries model cards, not weights). Use a source checkout "
            "or an installed package that includes them, or pass another model.")
    if card.weights.sha256 or card.weights.size_bytes:
        check_file(path, card.weights.sha256, card.weights.size_bytes, f"The bundled weights {path}")
    return path


def _require_license(card: Card, confirm: Optional[Confirm], cache_dir: Path | None) -> None:
    if license_accepted(card, cache_dir):
        return
    if confirm is None:
        raise LicenseNotAcceptedError(
            f"{card.license_text()}\nThe weights of {card.id} are not downloaded yet, and their "
            f"licence has not been accepted on this machine. Read it above, then run "
            f"'qgis-unravel models download {card.id}' to accept it and download them.")
    if not confirm(card):
        raise LicenseNotAcceptedError(f"Licence of {card.id} not accepted; nothing was downloaded.")
    mark_license_accepted(card, cache_dir)
