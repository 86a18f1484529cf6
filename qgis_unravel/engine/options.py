"""Every knob of a detection run in one dataclass, shared by the API, the CLI and the worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

DEFAULT_TILE_SIZE = 1024
DEFAULT_OVERLAP = 200
DEFAULT_MERGE_IOU = 0.1


@dataclass
class DetectOptions:
    """Options of ``detect_raster``; ``None`` means "the model's or the raster's default".

    tile_size, overlap: tile side and overlap in processing pixels.
    score_threshold: minimum score; None keeps the detector's own threshold.
    merge_iou: IoU of the cross-tile, per-class rotated NMS.
    batch_size: tiles per network call; None chooses it from the GPU's free memory (2 on CPU).
    bands: 1-based band indices (1 or 3 of them); None picks R,G,B by colour interpretation.
    value_range: (min, max) mapped to 0..255 instead of the automatic 2-98 % stretch.
    gsd: processing resolution in metres per pixel; None processes native pixels.
    aoi: a bbox string "minx,miny,maxx,maxy[,CRS]" or a path to a vector file.
    fp16: autocast to float16 on CUDA (the older switch; same as ``amp="fp16"``).
    amp: mixed precision on CUDA: "auto" (where the GPU parity figures allow it, see
        ``engine/precision.py``), "off", "fp16" or "bf16"; always float32 on CPU.
    read_threads: threads reading and stretching tiles; None: 1 on CPU, up to 4 on CUDA.
    seam_rule: drop detections cut by an interior tile border when a neighbour tile holds them whole.
    prefetch: how many tiles the reading thread may hold ahead of the network.
    model_name: stored in the ``model`` attribute of every feature.
    """

    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    score_threshold: Optional[float] = None
    merge_iou: float = DEFAULT_MERGE_IOU
    max_detections: Optional[int] = None
    batch_size: Optional[int] = None
    bands: Optional[Sequence[int]] = None
    value_range: Optional[Tuple[float, float]] = None
    gsd: Optional[float] = None
    aoi: Optional[str] = None
    fp16: bool = False
    amp: str = "auto"
    read_threads: Optional[int] = None
    seam_rule: bool = True
    prefetch: int = 4
    model_name: str = ""
