"""``RunSpec``: every knob of one detection run, in one typed, immutable value.

Each entry point (the CLI, the warm worker, the QGIS dialog, "Detect in view", the Processing
algorithm, the Python API) fills a RunSpec with what the user chose; an empty value (``None``)
means "the model's default". In the process that runs the model, right after the model is
known, ``spec.resolve(defaults)`` fills every empty value once: explicit value > model card >
global default. The engine consumes only resolved specs, and the resolved values are reported
back (``to_dict()``) so a user can see what ran.

Pure standard library (the QGIS plugin builds specs and never imports torch or GDAL); it crosses
process boundaries as JSON (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import UserError
from .precision import AMP_CHOICES

# Global defaults: used when neither the user nor the model card says otherwise.
DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 200
DEFAULT_SCORE = 0.05  # mmrotate's test_cfg.rcnn.score_thr
DEFAULT_NMS_IOU = 0.1  # mmrotate's test_cfg.rcnn.nms.iou_thr
DEFAULT_MAX_DETECTIONS = 2000  # mmrotate's test_cfg.rcnn.max_per_img
DEFAULT_MEAN: Tuple[float, float, float] = (123.675, 116.28, 103.53)  # ImageNet, RGB, 0..255
DEFAULT_STD: Tuple[float, float, float] = (58.395, 57.12, 57.375)
DEFAULT_CHANNEL_ORDER = "RGB"

# Upper bounds: beyond them a value is a typo or an attack, and would exhaust memory before any
# useful work (a 10^6 px tile alone is 2.7 TiB of activations).
MIN_TILE_SIZE = 32
MAX_TILE_SIZE = 8192
MAX_BATCH_SIZE = 256
MAX_DETECTIONS_LIMIT = 100_000
MAX_PREFETCH = 64
MAX_READ_THREADS = 32

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
# The knobs ``resolve`` always fills.
# settings a resolved spec always has (batch_size may stay None: automatic, chosen per device)
_RESOLVED_FIELDS = ("tile_size", "overlap", "score_threshold", "nms_iou", "merge_iou",
                    "max_detections", "mean", "std", "channel_order")


@dataclass(frozen=True)
class ModelDefaults:
    """What a model recommends for a run (from its card, else from the checkpoint's info).

    Every field may be None: the global default applies then.
    """

    name: str = ""
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    score_threshold: Optional[float] = None
    nms_iou: Optional[float] = None
    max_detections: Optional[int] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    channel_order: Optional[str] = None
    gsd_min: Optional[float] = None
    gsd_max: Optional[float] = None

    @classmethod
    def from_card(cls, card: Any) -> ModelDefaults:
        """The run settings of a model card (``zoo.Card``; read by attribute, no zoo import)."""
        tiling, thresholds = card.tiling, card.thresholds
        norm, res = card.normalization, card.ground_resolution_m
        return cls(name=card.id, tile_size=tiling.tile_size, overlap=tiling.overlap,
                   score_threshold=thresholds.score, nms_iou=thresholds.nms_iou,
                   max_detections=thresholds.max_detections, mean=tuple(norm.mean),
                   std=tuple(norm.std), channel_order=norm.channel_order,
                   gsd_min=res.min, gsd_max=res.max)

    @classmethod
    def from_info(cls, info: Optional[Mapping[str, Any]], name: str = "") -> ModelDefaults:
        """Defaults stored with a checkpoint (``detector.info``); most checkpoints have none."""
        info = info or {}

        def pick(key: str, kind: type) -> Any:
            value = info.get(key)
            return None if value is None else kind(value)

        return cls(name=name, tile_size=pick("tile_size", int), overlap=pick("overlap", int))


@dataclass(frozen=True)
class RunSpec:
    """One detection run. ``None`` means "the model's default" until ``resolve`` fills it.

    input: the raster (any GDAL source); output/layer: the vector file and layer to write
    (no output: the features come back in the result). overwrite/append: what to do with an
    existing output layer.
    model: card id or checkpoint path; device: auto, cpu, cuda or cuda:N.
    tile_size, overlap: tile side and overlap in processing pixels.
    batch_size: tiles per network call (None: automatic, chosen by the engine from the GPU's
    free memory; 2 on CPU; an out-of-memory part-way through halves it).
    score_threshold, nms_iou, max_detections: the detector's per-tile post-processing.
    merge_iou: IoU of the cross-tile, per-class rotated NMS (None: the NMS IoU).
    classes: class names to keep (empty keeps all).
    bands: 1-based band indices (1 or 3); None picks R,G,B by colour interpretation.
    value_range: (min, max) stretched to 0..255 instead of the automatic 2-98 % stretch.
    gsd: processing resolution in metres per pixel; None processes native pixels.
    aoi: "minx,miny,maxx,maxy[,CRS]" or the path of a polygon file.
    mean, std, channel_order: the network's input normalisation.
    fp16: autocast to float16 on CUDA (the older switch: the same as amp="fp16").
    amp: mixed precision on CUDA: "auto" (only where the GPU parity figures allow it, see
    ``engine/precision.py``), "off", "fp16" or "bf16"; float32 on CPU whatever the setting.
    read_threads: threads reading tiles (None: 1 on CPU, up to 4 on CUDA).
    seam_rule: drop detections cut by an interior tile border when a neighbour tile holds them
    whole. prefetch: tiles read ahead.
    model_name: stored in every feature's ``model`` attribute (resolve: the card id).
    resolved: set by ``resolve``; the engine refuses to guess on an unresolved spec.
    """

    input: str = ""
    output: Optional[str] = None
    layer: Optional[str] = None
    overwrite: bool = False
    append: bool = False
    model: str = ""
    device: str = "auto"
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: Optional[int] = None
    score_threshold: Optional[float] = None
    nms_iou: Optional[float] = None
    merge_iou: Optional[float] = None
    max_detections: Optional[int] = None
    classes: Tuple[str, ...] = ()
    bands: Optional[Tuple[int, ...]] = None
    value_range: Optional[Tuple[float, float]] = None
    gsd: Optional[float] = None
    aoi: Optional[str] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    channel_order: Optional[str] = None
    fp16: bool = False
    amp: str = "auto"
    read_threads: Optional[int] = None
    seam_rule: bool = True
    prefetch: int = 4
    model_name: str = ""
    resolved: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # JSON and Qt hand over lists; keep the value immutable and hashable.
        for name in ("classes", "bands", "value_range", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> RunSpec:
        """Raise a UserError (one line saying what to change) for the first bad value.

        Called by every entry point before anything slow; extend it here, in one place.
        """
        for problem in self.problems():
            raise UserError(problem)
        return self

    def problems(self) -> list[str]:
        """Every bad value, as one user-facing sentence each (empty: the spec is valid)."""
        out: list[str] = []
        if self.resolved:
            empty = [name for name in _RESOLVED_FIELDS if getattr(self, name) is None]
            if empty:
                out.append(f"a resolved run spec has empty settings ({', '.join(empty)}); "
                           "send it unresolved and let the engine resolve it")
        if self.overwrite and self.append:
            out.append("overwrite and append exclude each other; choose one")
        if not _DEVICE_RE.match(str(self.device)):
            out.append(f"invalid device {self.device!r}: use auto, cpu, cuda or cuda:N")
        _int_in(out, "tile size", self.tile_size, MIN_TILE_SIZE, MAX_TILE_SIZE, " pixels")
        _int_in(out, "batch size", self.batch_size, 1, MAX_BATCH_SIZE)
        _int_in(out, "max detections", self.max_detections, 1, MAX_DETECTIONS_LIMIT)
        _int_in(out, "prefetch", self.prefetch, 1, MAX_PREFETCH)
        _int_in(out, "reading threads", self.read_threads, 1, MAX_READ_THREADS)
        if self.amp not in AMP_CHOICES:
            out.append(f"mixed precision {self.amp!r}: use one of {', '.join(AMP_CHOICES)}")
        if self.overlap is not None:
            if not _is_int(self.overlap) or self.overlap < 0:
                out.append(f"overlap must be a whole number of pixels >= 0, not {self.overlap!r}")
            elif _is_int(self.tile_size) and self.tile_size and self.overlap >= self.tile_size:
                out.append(f"overlap ({self.overlap}) must be smaller than the tile size ({self.tile_size})")
        _unit(out, "score threshold", self.score_threshold, open_low=False)
        _unit(out, "NMS IoU", self.nms_iou, open_low=True)
        _unit(out, "merge IoU", self.merge_iou, open_low=True)
        if self.gsd is not None and not (_is_number(self.gsd) and self.gsd > 0):
            out.append("the processing resolution (GSD) must be a positive number of metres, "
                       f"not {self.gsd!r}")
        if self.bands is not None:
            if len(self.bands) not in (1, 3) or not all(_is_int(b) and b >= 1 for b in self.bands):
                out.append("bands takes 1 or 3 band numbers counted from 1, e.g. 3,2,1; "
                           f"not {list(self.bands)}")
        if self.value_range is not None:
            if len(self.value_range) != 2 or not all(_is_number(v) for v in self.value_range):
                out.append(f"the value range takes MIN,MAX, e.g. 0,3000; not {self.value_range!r}")
            elif not self.value_range[0] < self.value_range[1]:
                low, high = self.value_range
                out.append(f"the value range needs MIN < MAX, not {low:g},{high:g}")
        for name, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and (len(value) != 3 or not all(_is_number(v) for v in value)):
                out.append(f"normalisation {name} takes three numbers (R, G, B), not {value!r}")
        if self.std is not None and len(self.std) == 3 and not all(
                _is_number(v) and v > 0 for v in self.std):
            out.append(f"normalisation std must be positive, not {self.std!r}")
        if self.channel_order is not None and self.channel_order not in ("RGB", "BGR"):
            out.append(f"channel order must be RGB or BGR, not {self.channel_order!r}")
        if any(not isinstance(c, str) or not c.strip() for c in self.classes):
            out.append(f"classes must be non-empty names, not {list(self.classes)!r}")
        return out

    # -- resolution ---------------------------------------------------------------------------
    def resolve(self, defaults: Optional[ModelDefaults] = None) -> RunSpec:
        """Fill every empty knob: explicit value > model (card) default > global default.

        A tile size given without an overlap takes the model's overlap, capped at a quarter of
        the tile (a 128 px tile with the usual 200 px overlap would make no progress).
        Resolving a resolved spec returns it unchanged: resolution happens once.
        """
        if self.resolved:
            return self
        self.validate()
        d = defaults or ModelDefaults()
        tile = _first(self.tile_size, d.tile_size, DEFAULT_TILE_SIZE)
        if self.overlap is not None:
            overlap = self.overlap
        else:
            overlap = _first(d.overlap, DEFAULT_OVERLAP)
            if self.tile_size is not None and self.tile_size != d.tile_size:
                overlap = min(overlap, tile // 4)
        nms_iou = _first(self.nms_iou, d.nms_iou, DEFAULT_NMS_IOU)
        out = replace(
            self,
            tile_size=int(tile), overlap=int(overlap),
            batch_size=self.batch_size,  # None stays: the engine sizes batches to the device
            score_threshold=float(_first(self.score_threshold, d.score_threshold, DEFAULT_SCORE)),
            nms_iou=float(nms_iou),
            merge_iou=float(_first(self.merge_iou, nms_iou)),
            max_detections=int(_first(self.max_detections, d.max_detections, DEFAULT_MAX_DETECTIONS)),
            mean=tuple(float(v) for v in _first(self.mean, d.mean, DEFAULT_MEAN)),
            std=tuple(float(v) for v in _first(self.std, d.std, DEFAULT_STD)),
            channel_order=_first(self.channel_order, d.channel_order, DEFAULT_CHANNEL_ORDER),
            model_name=self.model_name or d.name or _stem(self.model),
            resolved=True,
        )
        return out.validate()

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """The inverse of ``to_dict``; an unknown key is a UserError (a typo must not pass)."""
        if not isinstance(data, Mapping):
            raise UserError(f"a run spec must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown run spec field(s): {', '.join(unknown)}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"the run spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def summary(self) -> str:
        """One line of the settings that shape the result (for logs)."""
        parts = [f"model {self.model_name or self.model}", f"tile {self.tile_size}",
                 f"overlap {self.overlap}", f"score {self.score_threshold}",
                 f"NMS IoU {self.nms_iou}", f"merge IoU {self.merge_iou}",
                 f"max {self.max_detections}/tile", f"batch {self.batch_size or 'auto'}"]
        if self.gsd is not None:
            parts.append(f"GSD {self.gsd:g} m")
        return ", ".join(parts)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _stem(model: str) -> str:
    name = re.split(r"[\\/]", str(model).rstrip("/\\"))[-1]
    return re.sub(r"\.(pth|pt|ckpt)$", "", name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(out: list, what: str, value: Any, low: int, high: int, unit: str = "") -> None:
    if value is not None and (not _is_int(value) or not low <= value <= high):
        out.append(f"{what} must be a whole number from {low} to {high}{unit}, not {value!r}")


def _unit(out: list, what: str, value: Any, open_low: bool) -> None:
    if value is None:
        return
    low_ok = _is_number(value) and (value > 0 if open_low else value >= 0)
    if not (low_ok and value <= 1):
        interval = "(0, 1]" if open_low else "[0, 1]"
        out.append(f"{what} must be in {interval}, not {value!r}")
