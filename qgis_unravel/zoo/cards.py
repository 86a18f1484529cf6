"""Model cards: one JSON file per model in ``models/``, checked against the documented schema.

The schema is written down in ``models/README.md``. This module must stay importable without
torch (the QGIS plugin lists cards in its dialog and never imports torch), so it uses only the
standard library. Every problem is reported as a CardError naming the file and the field, because
the person who reads it is usually the one who just edited that card.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Tuple

from ..paths import models_dir
from .errors import CardError, UnknownModelError

SCHEMA_VERSION = 1
SUPPORTED_DETECTORS = ("OrientedRCNN", "RefinedDet")
SUPPORTED_BACKBONES = ("UnravelNet", "LEGNet", "ResNet")
SUPPORTED_ANGLE_VERSIONS = ("le90",)
AVAILABILITIES = ("download", "bundled", "manual", "unpublished")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Architecture:
    detector: str
    backbone: str
    variant: str
    stem_dim: int
    depths: Tuple[int, ...]
    widths: Tuple[int, ...]
    neck_channels: int
    angle_version: str


@dataclass(frozen=True)
class Normalization:
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    channel_order: str


@dataclass(frozen=True)
class Tiling:
    tile_size: int
    overlap: int


@dataclass(frozen=True)
class GroundResolution:
    min: Optional[float]
    max: Optional[float]
    note: str


@dataclass(frozen=True)
class Thresholds:
    score: float
    nms_iou: float
    max_detections: int


@dataclass(frozen=True)
class Weights:
    availability: str
    filename: Optional[str]
    urls: Tuple[str, ...]
    path: Optional[str]
    size_bytes: Optional[int]
    sha256: Optional[str]
    note: str


@dataclass(frozen=True)
class License:
    weights: str
    url: str
    data: str
    notice: str


@dataclass(frozen=True)
class Source:
    repository: str
    config: str
    reported_map: Optional[float]
    evaluation: str


@dataclass(frozen=True)
class Card:
    """One validated model card. ``file`` is where it was read from."""

    id: str
    title: str
    summary: str
    dataset: str
    architecture: Architecture
    classes: Tuple[str, ...]
    normalization: Normalization
    tiling: Tiling
    ground_resolution_m: GroundResolution
    thresholds: Thresholds
    weights: Weights
    license: License
    citation: str
    source: Source
    file: Optional[Path] = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def license_text(self) -> str:
        """What a user must read before the first download, in a few lines."""
        lic = self.license
        lines = [f"Licence of the weights of {self.id}: {lic.weights} ({lic.url})"]
        if lic.data:
            lines.append(f"Training data: {lic.data}")
        if lic.notice:
            lines.append(lic.notice)
        return "\n".join(lines)

    def bundled_path(self, folder: Path | None = None) -> Path:
        """Where the weights of a bundled card are expected (they may be absent).

        The path is relative to the folder the card was read from (models/ by default).
        """
        if self.weights.availability != "bundled" or not self.weights.path:
            raise CardError(f"model card {self.id!r} has no bundled weights")
        base = folder or (self.file.parent if self.file is not None else models_dir())
        return Path(base) / self.weights.path


class _Fields:
    """Reads one JSON object of a card, naming file and field in every error."""

    def __init__(self, data: Any, where: str, prefix: str = "") -> None:
        self.where = where
        self.prefix = prefix
        if not isinstance(data, dict):
            raise self.error(prefix.rstrip(".") or "(top level)", "must be a JSON object")
        self.data = data
        self.seen: set[str] = set()

    def error(self, field: str, problem: str) -> CardError:
        return CardError(f"model card {self.where}: field '{field}' {problem}. "
                         "See models/README.md for the card schema.")

    def _get(self, key: str, default: Any = ...) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                raise self.error(self.prefix + key, "is missing")
            return default
        return self.data[key]

    def obj(self, key: str) -> _Fields:
        return _Fields(self._get(key), self.where, f"{self.prefix}{key}.")

    def string(self, key: str, default: Any = ..., nullable: bool = False,
               nonempty: bool = False) -> Any:
        value = self._get(key, default)
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self.error(self.prefix + key, f"must be a string, not {_kind(value)}")
        if nonempty and not value.strip():
            raise self.error(self.prefix + key, "must not be empty")
        return value

    def choice(self, key: str, allowed: Tuple[str, ...]) -> str:
        value = self.string(key)
        if value not in allowed:
            raise self.error(self.prefix + key, f"is {value!r}; supported: {', '.join(allowed)}")
        return value

    def integer(self, key: str, minimum: int | None = None, nullable: bool = False) -> Any:
        value = self._get(key)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(self.prefix + key, f"must be an integer, not {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.error(self.prefix + key, f"is {value}; it must be at least {minimum}")
        return value

    def number(self, key: str, lo: float | None = None, hi: float | None = None,
               nullable: bool = False, default: Any = ..., lo_open: bool = False) -> Any:
        value = self._get(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(self.prefix + key, f"must be a number, not {_kind(value)}")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        if too_low or (hi is not None and value > hi):
            left = "(" if lo_open else "["
            raise self.error(self.prefix + key, f"is {value}; it must be in {left}{lo}, {hi}]")
        return float(value)

    def int_list(self, key: str, length: int) -> Tuple[int, ...]:
        value = self._get(key)
        if (not isinstance(value, list) or len(value) != length
                or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)):
            raise self.error(self.prefix + key, f"must be a list of {length} positive integers")
        return tuple(value)

    def float_list(self, key: str, length: int, positive: bool = False) -> Tuple[float, ...]:
        value = self._get(key)
        if (not isinstance(value, list) or len(value) != length
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
            raise self.error(self.prefix + key, f"must be a list of {length} numbers")
        if positive and any(v <= 0 for v in value):
            raise self.error(self.prefix + key, "must hold only numbers > 0")
        return tuple(float(v) for v in value)

    def string_list(self, key: str) -> Tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise self.error(self.prefix + key, "must be a list of strings")
        return tuple(value)

    def done(self) -> None:
        """Reject fields the schema does not know: a typo must not drop a setting silently."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(self.prefix + unknown[0],
                             f"is not part of the schema (known here: {', '.join(sorted(self.seen))})")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _architecture(f: _Fields) -> Architecture:
    arch = Architecture(
        detector=f.choice("detector", SUPPORTED_DETECTORS),
        backbone=f.choice("backbone", SUPPORTED_BACKBONES),
        variant=f.string("variant", nonempty=True),
        stem_dim=f.integer("stem_dim", minimum=1),
        depths=f.int_list("depths", 4),
        widths=f.int_list("widths", 4),
        neck_channels=f.integer("neck_channels", minimum=1),
        angle_version=f.choice("angle_version", SUPPORTED_ANGLE_VERSIONS),
    )
    f.done()
    return arch


def _classes(f: _Fields) -> Tuple[str, ...]:
    classes = f.string_list("classes")
    if not classes or any(not c.strip() for c in classes):
        raise f.error("classes", "must be a non-empty list of non-empty names")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise f.error("classes", f"has duplicate names: {', '.join(duplicates)}")
    return classes


def _normalization(f: _Fields) -> Normalization:
    norm = Normalization(mean=f.float_list("mean", 3), std=f.float_list("std", 3, positive=True),
                         channel_order=f.choice("channel_order", ("RGB", "BGR")))
    f.done()
    return norm


def _tiling(f: _Fields) -> Tiling:
    tile = f.integer("tile_size", minimum=32)
    overlap = f.integer("overlap", minimum=0)
    if overlap >= tile:
        raise f.error(f.prefix + "overlap", f"is {overlap}; it must be smaller than tile_size ({tile})")
    f.done()
    return Tiling(tile_size=tile, overlap=overlap)


def _ground_resolution(f: _Fields) -> GroundResolution:
    lo = f.number("min", lo=0, lo_open=True, nullable=True)
    hi = f.number("max", lo=0, lo_open=True, nullable=True)
    if lo is not None and hi is not None and lo > hi:
        raise f.error(f.prefix + "min", f"({lo}) is larger than max ({hi})")
    res = GroundResolution(min=lo, max=hi, note=f.string("note"))
    f.done()
    return res


def _thresholds(f: _Fields) -> Thresholds:
    th = Thresholds(score=f.number("score", lo=0.0, hi=1.0),
                    nms_iou=f.number("nms_iou", lo=0.0, hi=1.0, lo_open=True),
                    max_detections=f.integer("max_detections", minimum=1))
    f.done()
    return th


def _check_url(f: _Fields, url: str) -> None:
    if not re.match(r"^https?://[^\s/]+/\S*$", url):
        raise f.error(f.prefix + "urls", f"holds {url!r}, which is not an http(s) link")


def _weights(f: _Fields) -> Weights:
    availability = f.choice("availability", AVAILABILITIES)
    filename = f.string("filename", nullable=True)
    urls = f.string_list("urls")
    path = f.string("path", nullable=True)
    size = f.integer("size_bytes", minimum=1, nullable=True)
    sha = f.string("sha256", nullable=True)
    note = f.string("note", default="")
    f.done()
    for url in urls:
        _check_url(f, url)
    if filename is not None and (not filename or Path(filename).name != filename
                                 or filename in (".", "..") or "\\" in filename):
        raise f.error(f.prefix + "filename", f"is {filename!r}; it must be a plain file name")
    if sha is not None and not _SHA256_RE.match(sha):
        raise f.error(f.prefix + "sha256", "must be 64 lower-case hexadecimal digits, or null")
    if availability in ("download", "manual") and not urls:
        raise f.error(f.prefix + "urls", f"must list at least one link when availability is {availability!r}")
    if availability in ("download", "manual") and filename is None:
        raise f.error(f.prefix + "filename", f"is required when availability is {availability!r}")
    if availability == "bundled":
        if not path:
            raise f.error(f.prefix + "path", "is required when availability is 'bundled'")
        parts = Path(path.replace("\\", "/")).parts
        if Path(path).is_absolute() or path.startswith(("/", "\\")) or ".." in parts:
            raise f.error(f.prefix + "path", f"is {path!r}; it must be relative to models/ without '..'")
    elif path is not None:
        raise f.error(f.prefix + "path", "is only allowed when availability is 'bundled'")
    return Weights(availability=availability, filename=filename, urls=urls, path=path,
                   size_bytes=size, sha256=sha, note=note)


def _license(f: _Fields) -> License:
    lic = License(weights=f.string("weights", nonempty=True), url=f.string("url"),
                  data=f.string("data"), notice=f.string("notice", nonempty=True))
    f.done()
    return lic


def _source(f: _Fields) -> Source:
    src = Source(repository=f.string("repository", nonempty=True), config=f.string("config", default=""),
                 reported_map=f.number("reported_map", lo=0, hi=100, nullable=True, default=None),
                 evaluation=f.string("evaluation", default=""))
    f.done()
    return src


def card_from_dict(data: Any, where: str = "<memory>", expected_id: str | None = None) -> Card:
    """Validate one parsed card. ``expected_id`` is the file's stem, which must equal ``id``."""
    f = _Fields(data, where)
    version = f.integer("schema_version")
    if version != SCHEMA_VERSION:
        raise f.error("schema_version", f"is {version}; this version of qgis-unravel reads {SCHEMA_VERSION}")
    card_id = f.string("id")
    if not _ID_RE.match(card_id):
        raise f.error("id", f"is {card_id!r}; use lower-case letters, digits, '.', '_' or '-' (at most 64)")
    if expected_id is not None and card_id != expected_id:
        raise f.error("id", f"is {card_id!r} but the file is named {expected_id}.json; they must match")
    card = Card(
        id=card_id,
        title=f.string("title", nonempty=True),
        summary=f.string("summary", nonempty=True),
        dataset=f.string("dataset", nonempty=True),
        architecture=_architecture(f.obj("architecture")),
        classes=_classes(f),
        normalization=_normalization(f.obj("normalization")),
        tiling=_tiling(f.obj("tiling")),
        ground_resolution_m=_ground_resolution(f.obj("ground_resolution_m")),
        thresholds=_thresholds(f.obj("thresholds")),
        weights=_weights(f.obj("weights")),
        license=_license(f.obj("license")),
        citation=f.string("citation"),
        source=_source(f.obj("source")),
    )
    f.done()
    if not card.citation.strip() and card.weights.availability != "bundled":
        raise f.error("citation", "must not be empty for published models")
    return card


def load_card(path: str | Path) -> Card:
    """Read and validate one card file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CardError(f"model card {path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"model card {path}: not valid JSON ({exc})") from None
    card = card_from_dict(data, where=str(path), expected_id=path.stem)
    return replace(card, file=path)


def list_cards(folder: str | Path | None = None) -> list[Card]:
    """Every card in ``folder`` (default: the project's models/ folder), sorted by id.

    One broken card makes the whole call fail with its message: a zoo that silently hides a
    model is harder to debug than one that refuses to start.
    """
    folder = Path(folder) if folder is not None else models_dir()
    if not folder.is_dir():
        return []
    return sorted((load_card(p) for p in folder.glob("*.json")), key=lambda c: c.id)


def get_card(card_id: str, folder: str | Path | None = None) -> Card:
    """The card with this id, or UnknownModelError listing the known ids."""
    cards = list_cards(folder)
    for card in cards:
        if card.id == card_id:
            return card
    raise UnknownModelError(unknown_model_message(card_id, [c.id for c in cards]))


def find_card(card_id: str, folder: str | Path | None = None) -> Card | None:
    """The card with this id, or None."""
    return next((c for c in list_cards(folder) if c.id == card_id), None)


def unknown_model_message(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listed = ", ".join(known) if known else "(none)"
    return (f"'{name}' is neither an existing checkpoint file nor a known model id.{hint} "
            f"Known models: {listed}. Run 'qgis-unravel models list' to see them, "
            "or give the path of an mmrotate Oriented R-CNN checkpoint (.pth).")
