"""The plugin's choices as the engine's ``RunSpec`` (the same value the CLI and the worker use).

Kept free of QGIS so the mapping from dialog values to the spec can be checked without a GUI.
An empty choice (None) means "the model's default": the worker resolves it from the model card.
"""

from __future__ import annotations

from typing import Iterable

from ..engine.errors import UserError
from ..engine.spec import RunSpec


class SpecError(ValueError):
    """A choice the engine would refuse; the message says what to change."""


def build_spec(*, source: str, output: str, model: str, device: str = "auto",
               layer: str = "detections", tile: int | None = None, overlap: int | None = None,
               batch: int | None = None, score: float | None = None, iou: float | None = None,
               aoi: str | None = None, gsd: float | None = None, classes: Iterable[str] = (),
               overwrite: bool = True) -> RunSpec:
    """One run as the worker will receive it, checked by the spec's own validation.

    ``aoi`` is ``"minx,miny,maxx,maxy[,CRS]"`` or the path of a polygon file. ``iou`` is the
    NMS IoU (within tiles; the merge across tiles follows it).
    """
    spec = RunSpec(input=source, output=output, layer=layer, model=model, device=engine_device(device),
                   tile_size=tile, overlap=overlap, batch_size=batch, score_threshold=score,
                   nms_iou=iou, aoi=aoi or None, gsd=gsd, classes=tuple(classes), overwrite=overwrite)
    try:
        return spec.validate()
    except UserError as exc:
        raise SpecError(str(exc)) from None


def engine_device(device: str) -> str:
    """The dialog's ``cuda:N`` as the engine's device: the first GPU is plain ``cuda``."""
    return "cuda" if device in ("cuda:0", "cuda") else device


def parse_classes(text: str) -> list[str]:
    """``"plane, ship"`` -> ``["plane", "ship"]`` (blank entries dropped, order kept)."""
    return [name.strip() for name in text.split(",") if name.strip()]
