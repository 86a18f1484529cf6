"""Reading tiles as network-ready uint8 RGB arrays, in a background thread.

Each tile is one windowed read (resampled by GDAL while reading when a processing
resolution is set), so memory depends on the tile size, never on the raster size. The
reading thread owns its own dataset handle (GDAL handles are not thread-safe) and stays a
few tiles ahead of the network through a bounded queue.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from .errors import UserError
from .raster import open_dataset
from .scaling import Scaling, read_valid
from .windows import Tile

# GDAL's block cache defaults to 5 % of RAM and would fill with blocks of a large raster,
# making memory grow with the raster; a tile row's worth of blocks is all that helps.
BLOCK_CACHE_BYTES = 128 * 2**20

# A processing resolution may enlarge the raster at most this many times per axis: finer adds no
# detail, only pixels (and an absurd --gsd would otherwise build a grid of billions of tiles).
MAX_UPSAMPLE = 8.0

# Invalid and padded pixels get the network's mean colour: zero after normalisation, the
# same value the detector pads with, so they look like "nothing" to the network.
NEUTRAL_RGB = (124, 116, 104)


@dataclass(frozen=True)
class ProcessingGrid:
    """The pixel grid the network sees: native pixels scaled by ``scale_x, scale_y``.

    ``scale`` is processing pixels per native pixel (0.5 halves the resolution).
    """

    width: int
    height: int
    scale_x: float = 1.0
    scale_y: float = 1.0

    @property
    def resampled(self) -> bool:
        return self.scale_x != 1.0 or self.scale_y != 1.0

    def native_window(self, tile: Tile) -> Window:
        """The (possibly fractional) native window a tile covers."""
        return Window(
            tile.x0 / self.scale_x, tile.y0 / self.scale_y,
            tile.width / self.scale_x, tile.height / self.scale_y,
        )

    def to_native(self, xy: np.ndarray) -> np.ndarray:
        """Processing pixel coordinates (..., 2) -> native pixel coordinates, exactly."""
        return xy / np.array([self.scale_x, self.scale_y], dtype=np.float64)


def processing_grid(
    width: int, height: int, pixel_size_m: Optional[Tuple[float, float]], gsd: Optional[float]
) -> ProcessingGrid:
    """The grid for a processing resolution of ``gsd`` metres per pixel (None: native)."""
    if gsd is None:
        return ProcessingGrid(width, height)
    if gsd <= 0:
        raise UserError(f"processing resolution {gsd} must be a positive number of metres per pixel")
    if pixel_size_m is None:
        raise UserError("--gsd needs a georeferenced raster (this one lacks a CRS or a geotransform)")
    scale_x, scale_y = pixel_size_m[0] / gsd, pixel_size_m[1] / gsd
    if max(scale_x, scale_y) > MAX_UPSAMPLE:
        finest = max(pixel_size_m) / MAX_UPSAMPLE
        raise UserError(
            f"--gsd {gsd:g} would enlarge the raster {max(scale_x, scale_y):.3g} times (its pixels are "
            f"{pixel_size_m[0]:.3g} x {pixel_size_m[1]:.3g} m); use at least {finest:.3g} m per pixel")
    out_w, out_h = int(width * scale_x), int(height * scale_y)
    if out_w < 4 or out_h < 4:
        raise UserError(
            f"at {gsd} m per pixel the raster would be only {out_w} x {out_h} pixels; use a smaller --gsd"
        )
    return ProcessingGrid(out_w, out_h, scale_x, scale_y)


class TileReader:
    """Reads tiles of one dataset as (size, size, 3) uint8, or None when nothing is valid."""

    def __init__(self, ds: rasterio.io.DatasetReader, bands: Sequence[int], scaling: Scaling,
                 grid: ProcessingGrid):
        self.ds = ds
        self.bands = tuple(bands)
        self.scaling = scaling
        self.grid = grid
        self.resampling = Resampling.bilinear if grid.resampled else Resampling.nearest

    def read(self, tile: Tile) -> Optional[np.ndarray]:
        window = self.grid.native_window(tile)
        data, valid = read_valid(self.ds, self.bands, window, (tile.height, tile.width), self.resampling)
        if not valid.any():
            return None
        rgb = self.scaling.to_uint8(data)
        out = np.empty((tile.size, tile.size, 3), dtype=np.uint8)
        out[...] = NEUTRAL_RGB
        view = out[: tile.height, : tile.width]
        view[...] = np.moveaxis(rgb, 0, -1)
        if not valid.all():
            view[~valid] = NEUTRAL_RGB
        return out


def yield_to_the_network(niceness: int = 10) -> None:
    """Lower this thread's CPU priority (Linux only) so that, on a machine with as many
    cores as torch threads, reading uses the network's idle moments instead of stalling it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: reading still works
        pass


def limit_block_cache(limit: int = BLOCK_CACHE_BYTES) -> None:
    """Lower GDAL's block cache to ``limit`` bytes (never raise it)."""
    from osgeo import gdal

    if gdal.GetCacheMax() > limit:
        gdal.SetCacheMax(limit)


_DONE = object()


class Prefetcher:
    """Iterates ``(tile, image_or_None)`` while a thread reads the next tiles ahead.

    Errors in the thread are re-raised in the consumer. ``close()`` stops the thread;
    use it as a context manager so a cancel or an exception never leaves it running.
    """

    def __init__(self, path: str, bands: Sequence[int], scaling: Scaling, grid: ProcessingGrid,
                 tiles: Sequence[Tile], depth: int = 4, cancel: Optional[threading.Event] = None):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._cancel = cancel
        self._args = (path, bands, scaling, grid, list(tiles))
        self._thread = threading.Thread(target=self._run, name="qgis-unravel-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        path, bands, scaling, grid, tiles = self._args
        limit_block_cache()
        yield_to_the_network()
        try:
            with open_dataset(path) as ds:
                reader = TileReader(ds, bands, scaling, grid)
                for tile in tiles:
                    if self._stop.is_set():
                        return
                    self._put((tile, reader.read(tile)))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)
            return
        self._put(_DONE)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Tuple[Tile, Optional[np.ndarray]]]:
        """Tiles in order; ends early when ``cancel`` is set, even while a read is stuck."""
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._cancel is not None and self._cancel.is_set():
                    return
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
