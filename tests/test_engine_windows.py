"""Tile grid: full coverage, edge snapping, padding only for small rasters, neighbours."""

from __future__ import annotations

import pytest

from qgis_unravel.engine.errors import UserError
from qgis_unravel.engine.windows import tile_grid, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 64), (256, 256, 64), (257, 256, 64),
                                                 (5000, 1024, 200), (1024 * 3, 1024, 0)])
def test_starts_cover_the_axis_and_the_last_tile_ends_on_the_edge(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + tile == length
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap  # overlap is at least the asked one: no gaps


def test_raster_smaller_than_a_tile_gives_one_padded_tile():
    grid = tile_grid(300, 120, 512, 100)
    assert len(grid.tiles) == 1
    tile = grid.tiles[0]
    assert (tile.x0, tile.y0, tile.width, tile.height, tile.size) == (0, 0, 300, 120, 512)
    assert tile.interior == (False, False, False, False)


def test_only_borders_between_tiles_are_interior():
    grid = tile_grid(1000, 600, 512, 128)
    assert (grid.rows, grid.cols) == (2, 3)
    top_left = grid.at(0, 0)
    assert top_left.interior == (False, False, True, True)
    middle = grid.at(1, 1)
    assert middle.interior == (True, True, True, False)
    assert all(t.width == 512 and t.height == 512 for t in grid.tiles)


def test_neighbours_are_exactly_the_overlapping_tiles():
    grid = tile_grid(2000, 2000, 512, 300)  # big overlap: tiles two steps away still overlap
    for tile in grid.tiles:
        expected = {o.index for o in grid.tiles if o.index != tile.index
                    and o.x0 < tile.x1 and tile.x0 < o.x1 and o.y0 < tile.y1 and tile.y0 < o.y1}
        assert {n.index for n in grid.neighbours(tile)} == expected


@pytest.mark.parametrize("tile,overlap", [(16, 0), (256, 256), (256, -1)])
def test_impossible_tilings_are_user_errors(tile, overlap):
    with pytest.raises(UserError):
        tile_grid(1000, 1000, tile, overlap)
