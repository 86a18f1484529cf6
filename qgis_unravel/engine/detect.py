"""``detect_raster``: the whole large-raster pipeline for one raster and one detector.

The run's settings come as one resolved ``RunSpec`` (an unresolved one is resolved here against
the detector's own defaults: the Python API gets the same rules as the CLI). Thresholds and
normalisation go to the detector with every call; the detector is never modified.

open and check the raster -> choose bands and scaling -> tile grid (optionally resampled
and clipped to an AOI) -> tiles read ahead in a thread, batched through the detector ->
merge across tiles -> map polygons and sizes. Nothing here holds more than a few tiles of
pixels, so memory stays flat however large the raster is.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .aoi import AreaOfInterest, load_aoi
from .contract import Detector, normalization_of, thresholds_of
from .errors import UserError
from .georef import Georeferencer, apply_affine, box_corners
from .merge import Detections, TileDetections, merge
from .raster import RasterInfo, describe, open_dataset
from .reader import Prefetcher, ProcessingGrid, limit_block_cache, processing_grid
from .result import RasterDetections
from .scaling import choose_scaling
from .spec import ModelDefaults, RunSpec
from .windows import Tile, tile_grid

ProgressFn = Callable[[int, int], None]


def detect_raster(
    source: Any, detector: Detector, options: Optional[RunSpec] = None,
    progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
) -> RasterDetections:
    """Detect objects in a raster of any size; map polygons in the raster's CRS.

    ``options`` is the run's spec (resolved against ``detector.info`` if it is not yet).
    ``progress(done, total)`` is called after every batch of tiles. Setting ``cancel``
    stops after the current batch and returns what was found so far, marked ``partial``.
    """
    options = resolved_for(detector, options)
    wanted = class_ids(detector, options.classes)  # a typo in a class name fails before any tile
    notes: List[str] = []
    limit_block_cache()
    with open_dataset(source) as ds:
        info = describe(ds, options.bands)
        scaling = choose_scaling(ds, info.bands, options.value_range)
    if not info.georeferenced:
        notes.append(f"{info.path} has no CRS or geotransform: features are in pixel coordinates "
                     "(y up, as QGIS shows such rasters) and sizes are left empty")
    georef = Georeferencer(info.transform, info.crs_wkt)
    pixel_size = georef.pixel_size_m(info.width, info.height)
    pgrid = processing_grid(info.width, info.height, pixel_size, options.gsd)
    grid = tile_grid(pgrid.width, pgrid.height, options.tile_size, options.overlap)
    aoi = load_aoi(options.aoi, info.crs_wkt) if options.aoi else None
    tiles = [t for t in grid.tiles if aoi is None or aoi.meets_polygon(tile_footprint(t, pgrid, info))]
    if aoi is not None and not tiles:
        raise UserError("the area of interest does not overlap the raster")

    parts, seen, skipped, partial = _run_tiles(info, scaling, pgrid, tiles, detector, options,
                                               progress, cancel)
    merged = merge(parts, grid, seen, options.merge_iou, options.seam_rule)
    if wanted is not None:
        merged = merged.take(np.isin(merged.labels, wanted))
    result = _to_map(merged, pgrid, info, georef, aoi, detector, options)
    result.partial = partial
    result.tiles_total = len(tiles)
    result.tiles_done = len(seen) + skipped
    result.tiles_skipped = skipped
    if pixel_size is not None:
        result.pixel_size_m = options.gsd or (pixel_size[0] + pixel_size[1]) / 2
    if skipped and not seen and not partial:
        notes.append("no tile had a valid pixel (all nodata or masked): nothing was detected")
    result.warnings = notes
    return result


def resolved_for(detector: Any, spec: Optional[RunSpec]) -> RunSpec:
    """``spec`` as it will run: resolved once, against the detector's own defaults if needed."""
    spec = spec or RunSpec()
    if spec.resolved:
        return spec
    return spec.resolve(ModelDefaults.from_info(getattr(detector, "info", None)))


def class_ids(detector: Any, names: Sequence[str]) -> Optional[np.ndarray]:
    """Indices of the class names to keep (None keeps all); an unknown name is a UserError."""
    if not names:
        return None
    classes = [str(c) for c in getattr(detector, "classes", [])]
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise UserError(f"the model has no class {', '.join(map(repr, unknown))}; "
                        f"its classes are: {', '.join(classes)}")
    return np.array([classes.index(n) for n in names], dtype=np.int64)


def tile_footprint(tile: Tile, pgrid: ProcessingGrid, info: RasterInfo) -> np.ndarray:
    """The (4, 2) map-coordinate corners of the raster area a tile covers."""
    px = np.array([[tile.x0, tile.y0], [tile.x1, tile.y0], [tile.x1, tile.y1], [tile.x0, tile.y1]], float)
    return apply_affine(info.transform, pgrid.to_native(px))


def _autocast(detector: Any, fp16: bool) -> contextlib.AbstractContextManager:
    if not fp16:
        return contextlib.nullcontext()
    import torch

    device = str(getattr(detector, "device", "cpu"))
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.float16)


def _run_tiles(
    info: RasterInfo, scaling: Any, pgrid: ProcessingGrid, tiles: Sequence[Tile], detector: Any,
    options: RunSpec, progress: Optional[ProgressFn], cancel: Optional[threading.Event],
) -> Tuple[List[TileDetections], List[int], int, bool]:
    """Run the network over the tiles as they arrive from the reading thread.

    Returns the per-tile detections, the indices of the tiles the network saw, how many
    tiles were skipped for having no valid pixel, and whether the run was cancelled.
    """
    parts: List[TileDetections] = []
    seen: List[int] = []
    skipped = 0
    batch: List[Tuple[Tile, np.ndarray]] = []
    batch_size = max(1, int(options.batch_size))

    reported = [-1]

    def report() -> None:
        done = len(seen) + skipped
        if progress is not None and done != reported[0]:
            reported[0] = done
            progress(done, len(tiles))

    thresholds, normalization = thresholds_of(options), normalization_of(options)

    def flush() -> None:
        with _autocast(detector, options.fp16):
            outputs = detector.predict([image for _, image in batch], len(batch),
                                       thresholds=thresholds, normalization=normalization)
        for (tile, _), out in zip(batch, outputs):
            parts.append(_inside_tile(tile, out))
            seen.append(tile.index)
        batch.clear()
        report()

    depth = max(options.prefetch, 2 * batch_size)
    with Prefetcher(info.path, info.bands, scaling, pgrid, tiles, depth) as tiles_read:
        for tile, image in tiles_read:
            if cancel is not None and cancel.is_set():
                return parts, seen, skipped, True
            if image is None:
                skipped += 1
                continue
            batch.append((tile, image))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    report()
    return parts, seen, skipped, False


def _inside_tile(tile: Tile, out: dict) -> TileDetections:
    """Keep the detections whose centre lies on the raster part of the tile (not the padding)."""
    boxes = np.asarray(out["boxes"], dtype=np.float64).reshape(-1, 5)
    keep = (boxes[:, 0] >= 0) & (boxes[:, 0] < tile.width) & (boxes[:, 1] >= 0) & (boxes[:, 1] < tile.height)
    return TileDetections(tile, boxes[keep], np.asarray(out["scores"]).reshape(-1)[keep],
                          np.asarray(out["labels"]).reshape(-1)[keep])


def _to_map(merged: Detections, pgrid: ProcessingGrid, info: RasterInfo, georef: Georeferencer,
            aoi: Optional[AreaOfInterest], detector: Any, options: RunSpec) -> RasterDetections:
    corners_px = pgrid.to_native(box_corners(merged.boxes))
    boxes_px = _native_boxes(merged.boxes, pgrid)
    polygons = georef.map_corners(corners_px)
    if aoi is not None and len(polygons):
        inside = aoi.contains_points(polygons.mean(axis=1))
        polygons, boxes_px, merged = polygons[inside], boxes_px[inside], merged.take(inside)
    measures = georef.measures(polygons)
    classes = [str(c) for c in getattr(detector, "classes", [])]
    return RasterDetections(
        polygons=polygons, boxes_px=boxes_px, scores=merged.scores, class_ids=merged.labels,
        angle_deg=measures.angle_deg, length_m=measures.length_m, width_m=measures.width_m,
        area_m2=measures.area_m2, classes=classes, crs_wkt=info.crs_wkt,
        model=options.model_name, source=info.path,
    )


def _native_boxes(boxes: np.ndarray, pgrid: ProcessingGrid) -> np.ndarray:
    """Processing-pixel boxes in native pixels (exact for the usual square pixels)."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 5)
    if pgrid.resampled:
        out[:, 0] /= pgrid.scale_x
        out[:, 1] /= pgrid.scale_y
        mean_scale = (pgrid.scale_x + pgrid.scale_y) / 2
        out[:, 2:4] /= mean_scale
    return out

