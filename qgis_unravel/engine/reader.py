"""Reading tiles as network-ready uint8 RGB arrays, in a background thread.

Each tile is one windowed read (resampled by GDAL while reading when a processing
resolution is set), so memory depends on the tile size, never on the raster size. The
reading threads (one on CPU, several for a GPU, which takes tiles faster than one thread
decodes them) each own a dataset handle (GDAL handles are not thread-safe) and stay a bounded
number of tiles ahead of the network, handing tiles over in grid order.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Deque, Iterator, List, Optional, Sequence, Tuple

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


def reader_threads_for(device: str, requested: Optional[int] = None) -> int:
    """Reading threads for a run: ``requested``, else 1 on CPU (the network needs the cores and
    one thread keeps ahead of it) and up to 4 on a GPU (which takes tiles faster than one
    thread decodes them)."""
    if requested is not None:
        if int(requested) < 1:
            raise UserError(f"{requested} reading threads: give at least 1")
        return int(requested)
    if str(device).startswith("cuda"):
        return max(1, min(4, os.cpu_count() or 1))
    return 1


class _ThreadDatasets:
    """One open dataset per reading thread (GDAL handles are not thread-safe), all closed at the end."""

    def __init__(self, path: str, bands: Sequence[int], scaling: Scaling, grid: ProcessingGrid):
        self._args = (bands, scaling, grid)
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: List[rasterio.io.DatasetReader] = []

    def reader(self) -> TileReader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            limit_block_cache()
            yield_to_the_network()
            ds = open_dataset(self._path)
            with self._lock:
                self._open.append(ds)
            reader = self._local.reader = TileReader(ds, *self._args)
        return reader

    def close(self) -> None:
        with self._lock:
            opened, self._open = self._open, []
        for ds in opened:
            ds.close()


class Prefetcher:
    """Iterates ``(tile, image_or_None)`` in tile order while ``threads`` threads read ahead.

    At most ``depth`` tiles are read or waiting at any time, so memory stays bounded. Errors in
    a reading thread are re-raised in the consumer. ``close()`` stops the reading; use it as a
    context manager so a cancel or an exception never leaves threads running.
    """

    def __init__(self, path: str, bands: Sequence[int], scaling: Scaling, grid: ProcessingGrid,
                 tiles: Sequence[Tile], depth: int = 4, threads: int = 1,
                 cancel: Optional[threading.Event] = None):
        self._tiles = list(tiles)
        self._depth = max(1, depth, threads)
        self._datasets = _ThreadDatasets(path, bands, scaling, grid)
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="qgis-unravel-reader")
        self._pending: Deque[Future] = deque()
        self._next = 0
        self._closed = False
        self._cancel = cancel
        self._fill()

    def _read(self, tile: Tile) -> Tuple[Tile, Optional[np.ndarray]]:
        if self._closed:
            return tile, None
        return tile, self._datasets.reader().read(tile)

    def _fill(self) -> None:
        while not self._closed and len(self._pending) < self._depth and self._next < len(self._tiles):
            self._pending.append(self._pool.submit(self._read, self._tiles[self._next]))
            self._next += 1

    def __iter__(self) -> Iterator[Tuple[Tile, Optional[np.ndarray]]]:
        """Tiles in order; ends early when ``cancel`` is set, even while a read is stuck."""
        while self._pending:
            try:
                item = self._pending[0].result(timeout=0.1)  # re-raises a reading thread's error
            except FutureTimeout:
                if self._cancelled():
                    return
                continue
            self._pending.popleft()
            self._fill()
            yield item

    def _cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def close(self) -> None:
        """Stop reading. After a cancel, a read stuck on a silent server is not waited for
        (GDAL's network timeouts end it) and its dataset is left to be closed by its thread."""
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        stuck = self._cancelled()
        self._pool.shutdown(wait=not stuck)
        if not stuck:
            self._datasets.close()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
