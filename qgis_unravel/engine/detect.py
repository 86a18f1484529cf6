"""``detect_raster``: the whole large-raster pipeline for one raster and one detector.

The run's settings come as one resolved ``RunSpec`` (an unresolved one is resolved here against
the detector's own defaults: the Python API gets the same rules as the CLI). Thresholds and
normalisation go to the detector with every call; the detector is never modified.

open and check the raster -> choose bands and scaling -> tile grid (optionally resampled
and clipped to an AOI) -> tiles read ahead by reading threads, batched through the detector
(batch size from the GPU's free memory, halved on out-of-memory) with results kept on the
device -> one copy back, merge across tiles -> map polygons and sizes. Nothing here holds
more than a few tiles of pixels, so memory stays flat however large the raster is.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from . import precision
from .aoi import AreaOfInterest, load_aoi
from .batching import AdaptiveBatches, resolve_batch_size
from .contract import Detector, normalization_of, thresholds_of
from .errors import UserError
from .georef import Georeferencer, apply_affine, box_corners
from .merge import Detections, TileDetections, merge
from .raster import RasterInfo, cancellable, describe, is_remote, open_dataset
from .reader import Prefetcher, ProcessingGrid, limit_block_cache, processing_grid, reader_threads_for
from .result import RasterDetections
from .scaling import Scaling, choose_scaling
from .spec import ModelDefaults, RunSpec
from .windows import Tile, TileGrid, tile_grid

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class WindowSource:
    """What a reader needs to turn windows of one raster into network-ready tiles.

    Small and picklable: a distributed run sends it with every batch of windows.
    """

    info: RasterInfo
    scaling: Scaling
    pgrid: ProcessingGrid


@dataclass
class RasterPlan:
    """Everything decided about one raster before its first tile is read."""

    source: WindowSource
    grid: TileGrid
    tiles: List[Tile]  # the windows to run (the grid's, less those outside the AOI)
    georef: Georeferencer
    aoi: Optional[AreaOfInterest]
    pixel_size: Optional[Tuple[float, float]]
    notes: List[str]


@dataclass
class WindowsRun:
    """What the network found in some windows of a raster."""

    parts: List[TileDetections]
    seen: List[int]  # indices of the windows the network saw
    skipped: int  # windows without a valid pixel
    partial: bool = False  # cancelled before the last window
    warnings: List[str] = field(default_factory=list)  # e.g. a batch halved after GPU out-of-memory


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
    classes = classes_of(detector)
    class_ids(classes, options.classes)  # a typo in a class name fails before any tile
    plan = plan_raster(source, options, cancel)
    run = run_windows(plan.source, plan.tiles, detector, options, progress, cancel)
    return finish_raster(plan, run, classes, options)


def plan_raster(source: Any, options: RunSpec, cancel: Optional[threading.Event] = None) -> RasterPlan:
    """Open and check a raster, choose its scaling and lay its windows (no pixel is run).

    ``options`` must be resolved (its tile size and overlap decide the windows). ``cancel``
    interrupts the opening of a remote raster whose server stops answering.
    """
    notes: List[str] = []
    limit_block_cache()

    def inspect() -> Tuple[RasterInfo, Any]:
        with open_dataset(source) as ds:
            info = describe(ds, options.bands)
            return info, choose_scaling(ds, info.bands, options.value_range)

    info, scaling = cancellable(inspect, cancel if is_remote(source) else None)
    note = info.place.note(info.path) if info.place is not None else None
    if note:
        notes.append(note)
    georef = Georeferencer(info.transform, info.crs_wkt, measurable=info.georeferenced)
    pixel_size = georef.pixel_size_m(info.width, info.height)
    pgrid = processing_grid(info.width, info.height, pixel_size, options.gsd)
    grid = tile_grid(pgrid.width, pgrid.height, options.tile_size, options.overlap)
    aoi = load_aoi(options.aoi, info.crs_wkt) if options.aoi else None
    tiles = [t for t in grid.tiles if aoi is None or aoi.meets_polygon(tile_footprint(t, pgrid, info))]
    if aoi is not None and not tiles:
        raise UserError("the area of interest does not overlap the raster")
    return RasterPlan(WindowSource(info, scaling, pgrid), grid, tiles, georef, aoi, pixel_size, notes)


def run_windows(
    source: WindowSource, tiles: Sequence[Tile], detector: Any, options: RunSpec,
    progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
) -> WindowsRun:
    """Read ``tiles`` of one raster and run the detector over them."""
    notes: List[str] = []
    parts, seen, skipped, partial = _run_tiles(source.info, source.scaling, source.pgrid, tiles,
                                               detector, options, progress, cancel, notes)
    return WindowsRun(parts, seen, skipped, partial, notes)


def finish_raster(plan: RasterPlan, run: WindowsRun, classes: Sequence[str],
                  options: RunSpec) -> RasterDetections:
    """Merge the windows' detections across seams, keep the wanted classes and map them.

    The windows are merged in index order whatever order they were run in, so a run split
    across processes gives exactly the features of a run in one.
    """
    order = sorted(range(len(run.parts)), key=lambda i: run.parts[i].tile.index)
    parts = [run.parts[i] for i in order]
    seen = sorted(run.seen)
    merged = merge(_on_host(parts), plan.grid, seen, options.merge_iou, options.seam_rule)
    wanted = class_ids(classes, options.classes)
    if wanted is not None:
        merged = merged.take(np.isin(merged.labels, wanted))
    info = plan.source.info
    result = _to_map(merged, plan.source.pgrid, info, plan.georef, plan.aoi, classes, options)
    result.windows = window_bounds(plan.grid, result.windows)
    result.partial = run.partial
    result.tiles_total = len(plan.tiles)
    result.tiles_done = len(seen) + run.skipped
    result.tiles_skipped = run.skipped
    if plan.pixel_size is not None:
        result.pixel_size_m = options.gsd or (plan.pixel_size[0] + plan.pixel_size[1]) / 2
    notes = list(plan.notes) + list(run.warnings)
    if run.skipped and not seen and not run.partial:
        notes.append("no tile had a valid pixel (all nodata or masked): nothing was detected")
    result.warnings = notes
    return result


def window_bounds(grid: TileGrid, indices: np.ndarray) -> np.ndarray:
    """(N, 4) x0, y0, width, height of the windows with the given indices."""
    rows = [(t.x0, t.y0, t.width, t.height) for t in (grid.tiles[int(i)] for i in indices)]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def classes_of(detector: Any) -> List[str]:
    """The detector's class names (index = class id)."""
    return [str(c) for c in getattr(detector, "classes", [])]


def resolved_for(detector: Any, spec: Optional[RunSpec]) -> RunSpec:
    """``spec`` as it will run: resolved once, against the detector's own defaults if needed."""
    spec = spec or RunSpec()
    if spec.resolved:
        return spec
    return spec.resolve(ModelDefaults.from_info(getattr(detector, "info", None)))


def class_ids(classes: Sequence[str], names: Sequence[str]) -> Optional[np.ndarray]:
    """Indices of the class names to keep (None keeps all); an unknown name is a UserError."""
    if not names:
        return None
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise UserError(f"the model has no class {', '.join(map(repr, unknown))}; "
                        f"its classes are: {', '.join(classes)}")
    return np.array([classes.index(n) for n in names], dtype=np.int64)


def tile_footprint(tile: Tile, pgrid: ProcessingGrid, info: RasterInfo) -> np.ndarray:
    """The (4, 2) map-coordinate corners of the raster area a tile covers."""
    px = np.array([[tile.x0, tile.y0], [tile.x1, tile.y0], [tile.x1, tile.y1], [tile.x0, tile.y1]], float)
    return apply_affine(info.transform, pgrid.to_native(px))


def _autocast(detector: Any, amp: Any) -> contextlib.AbstractContextManager:
    """Autocast for the detector's device and ``amp`` ("auto", "off", "fp16", "bf16"; a bool
    is the older fp16 switch); float32 off CUDA."""
    if isinstance(amp, bool):
        amp = "fp16" if amp else "off"
    device = precision.detector_device(detector)
    dtype_name = precision.resolve_amp(amp, device, precision.detector_backbone(detector))
    return precision.autocast(device, dtype_name)


def _amp_setting(options: RunSpec) -> str:
    return "fp16" if options.fp16 else options.amp


def _predict(detector: Any, images: Sequence[np.ndarray], **settings: Any) -> List[dict]:
    """One network call over ``images`` (``settings``: the per-call thresholds and
    normalisation); results stay on the detector's device when it can keep them there (no
    copy back and no wait for the GPU until the merge)."""
    if getattr(detector, "predicts_on_device", False):
        return detector.predict(list(images), len(images), on_device=True, **settings)
    return detector.predict(list(images), len(images), **settings)


def _run_tiles(
    info: RasterInfo, scaling: Any, pgrid: ProcessingGrid, tiles: Sequence[Tile], detector: Any,
    options: RunSpec, progress: Optional[ProgressFn], cancel: Optional[threading.Event],
    notes: Optional[List[str]] = None,
) -> Tuple[List[TileDetections], List[int], int, bool]:
    """Run the network over the tiles as they arrive from the reading threads.

    The batch size is the options' or, when None, chosen from the device's free memory; a
    batch that runs out of GPU memory is halved and retried (one warning in ``notes``).
    Returns the per-tile detections, the indices of the tiles the network saw, how many
    tiles were skipped for having no valid pixel, and whether the run was cancelled.
    """
    parts: List[TileDetections] = []
    seen: List[int] = []
    skipped = 0
    batch: List[Tuple[Tile, np.ndarray]] = []
    device = precision.detector_device(detector)
    amp = _amp_setting(options)
    half = precision.resolve_amp(amp, device, precision.detector_backbone(detector)) is not None
    thresholds, normalization = thresholds_of(options), normalization_of(options)
    batches = AdaptiveBatches(
        lambda chunk: _predict(detector, chunk, thresholds=thresholds, normalization=normalization),
        resolve_batch_size(options.batch_size, device, int(options.tile_size), half))

    reported = [-1]

    def report() -> None:
        done = len(seen) + skipped
        if progress is not None and done != reported[0]:
            reported[0] = done
            progress(done, len(tiles))

    def flush() -> None:
        with _autocast(detector, amp):
            outputs = batches.run([image for _, image in batch])
        for (tile, _), out in zip(batch, outputs):
            parts.append(_inside_tile(tile, out))
            seen.append(tile.index)
        batch.clear()
        report()

    depth = max(options.prefetch, 2 * batches.batch_size)
    threads = reader_threads_for(device, options.read_threads)
    try:
        with Prefetcher(info.path, info.bands, scaling, pgrid, tiles, depth, threads,
                        cancel) as tiles_read:
            for tile, image in tiles_read:
                if cancel is not None and cancel.is_set():
                    return parts, seen, skipped, True
                if image is None:
                    skipped += 1
                    continue
                batch.append((tile, image))
                if len(batch) >= batches.batch_size:
                    flush()
            if cancel is not None and cancel.is_set():  # the reader stopped waiting for a tile
                return parts, seen, skipped, True
            if batch:
                flush()
    finally:
        if notes is not None:
            notes.extend(batches.warnings)
    report()
    # A cancel during the last batch still ends as cancelled (the batch's objects are kept).
    return parts, seen, skipped, bool(cancel is not None and cancel.is_set())


def _inside_tile(tile: Tile, out: dict) -> TileDetections:
    """Keep the detections whose centre lies on the raster part of the tile (not the padding).

    Tensors are left whole on their device (a boolean selection there would wait for the GPU);
    ``_on_host`` copies them all back at once and makes the same selection.
    """
    boxes, scores, labels = out["boxes"], out["scores"], out["labels"]
    if not isinstance(boxes, np.ndarray) and hasattr(boxes, "device"):  # a torch tensor
        return TileDetections(tile, boxes.reshape(-1, 5), scores.reshape(-1), labels.reshape(-1))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    keep = _centre_inside(boxes, tile)
    return TileDetections(tile, boxes[keep], np.asarray(scores).reshape(-1)[keep],
                          np.asarray(labels).reshape(-1)[keep])


def _centre_inside(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """Mask of the boxes whose centre lies on the tile's raster part."""
    x, y = boxes[:, 0], boxes[:, 1]
    return (x >= 0) & (x < tile.width) & (y >= 0) & (y < tile.height)


def _on_host(parts: List[TileDetections]) -> List[TileDetections]:
    """The per-tile detections as numpy arrays, with one device-to-host copy for all of those
    still on a device, selected as ``_inside_tile`` selects numpy results."""
    on_device = [p for p in parts if not isinstance(p.boxes, np.ndarray)]
    if not on_device:
        return parts
    import torch

    counts = [int(p.boxes.shape[0]) for p in on_device]
    boxes = torch.cat([p.boxes.float() for p in on_device]).cpu().numpy().astype(np.float64)
    scores = torch.cat([p.scores.float() for p in on_device]).cpu().numpy()
    labels = torch.cat([p.labels.long() for p in on_device]).cpu().numpy()
    rows = iter(np.split(np.arange(len(scores)), np.cumsum(counts)[:-1]))
    out = []
    for p in parts:
        if isinstance(p.boxes, np.ndarray):
            out.append(p)
            continue
        mine = next(rows)
        keep = mine[_centre_inside(boxes[mine], p.tile)]
        out.append(TileDetections(p.tile, boxes[keep], scores[keep], labels[keep]))
    return out


def _to_map(merged: Detections, pgrid: ProcessingGrid, info: RasterInfo, georef: Georeferencer,
            aoi: Optional[AreaOfInterest], classes: Sequence[str], options: RunSpec) -> RasterDetections:
    corners_px = pgrid.to_native(box_corners(merged.boxes))
    boxes_px = _native_boxes(merged.boxes, pgrid)
    polygons = georef.map_corners(corners_px)
    if aoi is not None and len(polygons):
        inside = aoi.contains_points(polygons.mean(axis=1))
        polygons, boxes_px, merged = polygons[inside], boxes_px[inside], merged.take(inside)
    measures = georef.measures(polygons)
    return RasterDetections(
        polygons=polygons, boxes_px=boxes_px, scores=merged.scores, class_ids=merged.labels,
        angle_deg=measures.angle_deg, length_m=measures.length_m, width_m=measures.width_m,
        area_m2=measures.area_m2, classes=list(classes), crs_wkt=info.crs_wkt,
        model=options.model_name, source=info.path, windows=merged.tiles,
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

