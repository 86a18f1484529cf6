"""The tile grid over a raster: sizes, overlaps, edge snapping and interior borders.

Everything here is in *processing* pixels (native pixels, or resampled ones when a
processing resolution is asked for). Tiles keep one size so they batch on the device;
the last row and column are snapped to the raster edge instead of running past it, and
only a raster smaller than a tile is padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

from .errors import UserError


@dataclass(frozen=True)
class Tile:
    """One window of the grid.

    ``x0, y0, width, height`` is the part of the raster the tile covers; the array fed to
    the network is ``size x size`` (padded when the raster is smaller than a tile).
    ``interior`` tells, for the left, top, right and bottom edge, whether another tile
    continues beyond it (a border that can cut objects) or the raster ends there.
    """

    index: int
    row: int
    col: int
    x0: int
    y0: int
    width: int
    height: int
    size: int
    interior: Tuple[bool, bool, bool, bool]

    @property
    def x1(self) -> int:
        return self.x0 + self.width

    @property
    def y1(self) -> int:
        return self.y0 + self.height


def check_tiling(tile_size: int, overlap: int) -> None:
    """Reject tilings that cannot work, with the fix in the message."""
    if tile_size < 32:
        raise UserError(f"tile size {tile_size} is too small; use at least 32 pixels (default 1024)")
    if overlap < 0:
        raise UserError(f"overlap {overlap} is negative; use 0 or more pixels")
    if overlap >= tile_size:
        raise UserError(f"overlap {overlap} must be smaller than the tile size {tile_size}")


def tile_starts(length: int, tile_size: int, overlap: int) -> List[int]:
    """Start offsets along one axis: regular strides, the last one snapped to the edge."""
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


@dataclass
class TileGrid:
    """The tiles of one raster plus a row/column index to find neighbours quickly."""

    width: int
    height: int
    tile_size: int
    overlap: int
    tiles: List[Tile]
    rows: int
    cols: int

    def at(self, row: int, col: int) -> Tile:
        return self.tiles[row * self.cols + col]

    def neighbours(self, tile: Tile) -> Iterator[Tile]:
        """Tiles whose extent overlaps ``tile`` (the ones that may see the same objects)."""
        reach = max(1, -(-self.tile_size // max(1, self.tile_size - self.overlap)))
        for row in range(max(0, tile.row - reach), min(self.rows, tile.row + reach + 1)):
            for col in range(max(0, tile.col - reach), min(self.cols, tile.col + reach + 1)):
                other = self.at(row, col)
                if other.index != tile.index and _overlap(tile, other):
                    yield other


def _overlap(a: Tile, b: Tile) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def tile_grid(width: int, height: int, tile_size: int, overlap: int) -> TileGrid:
    """All tiles of a ``width x height`` raster, row by row."""
    check_tiling(tile_size, overlap)
    xs = tile_starts(width, tile_size, overlap)
    ys = tile_starts(height, tile_size, overlap)
    tiles = []
    for row, y0 in enumerate(ys):
        for col, x0 in enumerate(xs):
            w = min(tile_size, width - x0)
            h = min(tile_size, height - y0)
            interior = (x0 > 0, y0 > 0, x0 + w < width, y0 + h < height)
            tiles.append(Tile(len(tiles), row, col, x0, y0, w, h, tile_size, interior))
    return TileGrid(width, height, tile_size, overlap, tiles, len(ys), len(xs))
