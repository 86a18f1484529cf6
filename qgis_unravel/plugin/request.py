"""One detection as the plugin asks for it, and its translation into engine CLI arguments.

Kept free of QGIS so the mapping from dialog values to engine options can be checked against the
engine's own argument parser without a GUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DetectRequest:
    """Everything one run needs once the raster and the output are plain files.

    ``aoi`` is what the engine's ``--aoi`` takes: ``"minx,miny,maxx,maxy[,CRS]"`` or the path of
    a polygon file. ``classes`` is applied by the plugin after the run (empty keeps all).
    """

    source: str
    output: str
    layer: str = "detections"
    model: str = ""
    device: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch: int = 0  # 0: automatic (from the GPU's free memory; 2 on CPU)
    score: float | None = None
    iou: float | None = None
    aoi: str | None = None
    gsd: float | None = None
    classes: list[str] = field(default_factory=list)
    overwrite: bool = True

    def to_args(self) -> list[str]:
        """The arguments after ``detect`` for the engine CLI / warm worker."""
        args = [self.source, "-o", self.output, "--layer", self.layer, "--device", engine_device(self.device)]
        if int(self.batch) > 0:
            args += ["--batch", str(int(self.batch))]
        if self.model:
            args += ["--model", self.model]
        optional = (("--tile", self.tile), ("--overlap", self.overlap), ("--score", self.score),
                    ("--iou", self.iou), ("--aoi", self.aoi), ("--gsd", self.gsd))
        for flag, value in optional:
            if value is not None and value != "":
                args += [flag, _text(value)]
        if self.overwrite:
            args.append("--overwrite")
        return args


def engine_device(device: str) -> str:
    """The dialog's ``cuda:N`` as the engine's ``--device``: the first GPU is plain ``cuda``."""
    return "cuda" if device in ("cuda:0", "cuda") else device


def _text(value: object) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def parse_classes(text: str) -> list[str]:
    """``"plane, ship"`` -> ``["plane", "ship"]`` (blank entries dropped, order kept)."""
    return [name.strip() for name in text.split(",") if name.strip()]
