"""Reading tiles: band choice, 8-bit scaling, masked pixels, resampling, bad files."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from test_engine_fakes import write_raster

from qgis_unravel.engine.errors import UserError
from qgis_unravel.engine.raster import describe, open_dataset
from qgis_unravel.engine.reader import NEUTRAL_RGB, Prefetcher, ProcessingGrid, TileReader, reader_threads_for
from qgis_unravel.engine.scaling import Scaling, choose_scaling
from qgis_unravel.engine.windows import tile_grid


def _reader(path, bands=None, value_range=None, grid=None):
    ds = open_dataset(path)
    info = describe(ds, bands)
    scaling = choose_scaling(ds, info.bands, value_range)
    return ds, info, TileReader(ds, info.bands, scaling, grid or ProcessingGrid(ds.width, ds.height))


def test_rgb_bands_are_found_by_colour_interpretation(tmp_path):
    data = np.zeros((32, 32, 4), np.uint8)
    data[..., 0], data[..., 1], data[..., 2], data[..., 3] = 10, 20, 30, 255
    path = write_raster(tmp_path / "bgra.tif", data)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha]
    ds, info, reader = _reader(path)
    assert info.bands == (3, 2, 1)
    tile = tile_grid(32, 32, 32, 0).tiles[0]
    assert reader.read(tile)[0, 0].tolist() == [30, 20, 10]


def test_one_band_is_replicated_to_grey_and_two_bands_need_a_choice(tmp_path):
    grey = write_raster(tmp_path / "grey.tif", np.full((16, 16), 77, np.uint8))
    _, info, reader = _reader(grey)
    assert info.bands == (1, 1, 1)
    assert reader.read(tile_grid(16, 16, 32, 0).tiles[0])[3, 3].tolist() == [77, 77, 77]
    two = write_raster(tmp_path / "two.tif", np.full((16, 16, 2), 5, np.uint8))
    with pytest.raises(UserError, match="--bands"):
        describe(open_dataset(two))
    assert describe(open_dataset(two), [2]).bands == (2, 2, 2)
    with pytest.raises(UserError, match="does not exist"):
        describe(open_dataset(two), [1, 2, 3])


def test_uint16_gets_a_2_98_percent_stretch_and_user_range_overrides_it(tmp_path):
    values = np.linspace(1000, 2000, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = write_raster(tmp_path / "u16.tif", np.stack([values] * 3, axis=-1))
    _, _, reader = _reader(path)
    low, high = reader.scaling.low[0], reader.scaling.high[0]
    assert low == pytest.approx(1020, abs=2) and high == pytest.approx(1980, abs=2)
    img = reader.read(tile_grid(64, 64, 64, 0).tiles[0])
    assert img.dtype == np.uint8 and img[0, 0, 0] == 0 and img[-1, -1, 0] == 255
    _, _, fixed = _reader(path, value_range=(0, 4000))
    assert fixed.read(tile_grid(64, 64, 64, 0).tiles[0])[0, 0, 0] == round(1000 / 4000 * 255)


def test_uint8_passes_through_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    _, _, reader = _reader(write_raster(tmp_path / "u8.tif", data))
    assert reader.scaling == Scaling()
    img = reader.read(tile_grid(50, 40, 64, 0).tiles[0])
    assert np.array_equal(img[:40, :50], data)
    assert (img[40:] == NEUTRAL_RGB).all() and (img[:, 50:] == NEUTRAL_RGB).all()


def test_nodata_alpha_and_nan_pixels_become_neutral(tmp_path):
    data = np.full((32, 32, 3), 200, np.uint8)
    data[:4] = 0
    _, _, reader = _reader(write_raster(tmp_path / "nd.tif", data, nodata=0))
    img = reader.read(tile_grid(32, 32, 32, 0).tiles[0])
    assert (img[:4] == NEUTRAL_RGB).all() and (img[4:] == 200).all()

    rgba = np.full((32, 32, 4), 200, np.uint8)
    rgba[:, :5, 3] = 0
    _, _, reader = _reader(write_raster(tmp_path / "a.tif", rgba, photometric="RGB", alpha="YES"))
    img = reader.read(tile_grid(32, 32, 32, 0).tiles[0])
    assert (img[:, :5] == NEUTRAL_RGB).all() and (img[:, 5:] == 200).all()

    floats = np.random.default_rng(1).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    floats[10:12, :, 1] = np.nan
    _, _, reader = _reader(write_raster(tmp_path / "f.tif", floats))
    img = reader.read(tile_grid(32, 32, 32, 0).tiles[0])
    assert (img[10:12] == NEUTRAL_RGB).all()


def test_a_window_without_valid_pixels_is_skipped(tmp_path):
    data = np.full((64, 128, 3), 90, np.uint8)
    data[:, 64:] = 0
    _, _, reader = _reader(write_raster(tmp_path / "half.tif", data, nodata=0))
    grid = tile_grid(128, 64, 64, 0)
    assert reader.read(grid.tiles[0]) is not None
    assert reader.read(grid.tiles[1]) is None


def test_resampled_reading_maps_back_to_native_pixels_exactly(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.float32), (64, 1))
    path = write_raster(tmp_path / "ramp.tif", np.stack([ramp] * 3, -1))
    grid = ProcessingGrid(128, 32, 0.5, 0.5)
    _, _, reader = _reader(path, value_range=(0, 255), grid=grid)
    tile = tile_grid(128, 32, 32, 0).tiles[1]  # processing x 32..64 = native 64..128
    img = reader.read(tile)
    # processing pixel i covers native [64 + 2i, 66 + 2i): its value is the native mean
    expected = 64 + 2 * np.arange(32) + 0.5
    assert np.abs(img[5, :, 0].astype(float) - expected).max() <= 1.0
    assert np.allclose(grid.to_native(np.array([[16.0, 3.0]])), [[32.0, 6.0]])


def test_prefetcher_yields_every_tile_in_order_and_reraises_errors(tmp_path):
    path = write_raster(tmp_path / "p.tif", np.full((100, 100, 3), 50, np.uint8))
    ds, info, reader = _reader(path)
    grid = tile_grid(100, 100, 40, 10)
    with Prefetcher(info.path, info.bands, reader.scaling, reader.grid, grid.tiles, depth=2) as tiles:
        seen = [(tile.index, image.shape) for tile, image in tiles]
    assert seen == [(t.index, (40, 40, 3)) for t in grid.tiles]
    broken = Prefetcher(str(tmp_path / "gone.tif"), info.bands, reader.scaling, reader.grid, grid.tiles)
    with pytest.raises(UserError, match="not found"):
        list(broken)
    broken.close()


def test_bad_files_are_user_errors_with_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        open_dataset(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    with pytest.raises(UserError, match="cannot read"):
        open_dataset(text)
    tiny = write_raster(tmp_path / "one.tif", np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(UserError, match="1 x 1"):
        describe(open_dataset(tiny))
    nan = write_raster(tmp_path / "nan.tif", np.full((20, 20, 3), np.nan, np.float32))
    with pytest.raises(UserError, match="no valid pixels"):
        choose_scaling(open_dataset(nan), (1, 2, 3), None)


def test_truncated_tiff_fails_with_a_user_error_when_read(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    path = write_raster(tmp_path / "full.tif", data, tiled=True, blockxsize=128, blockysize=128)
    raw = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="truncated|cannot read"):
        ds, info, reader = _reader(cut)
        for tile in tile_grid(512, 512, 256, 0).tiles:
            reader.read(tile)


def test_several_reading_threads_give_the_same_tiles_in_order(tmp_path):
    rng = np.random.default_rng(3)
    path = write_raster(tmp_path / "r.tif", rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))
    _, info, reader = _reader(path)
    grid = tile_grid(260, 300, 64, 16)
    expected = [(t.index, reader.read(t)) for t in grid.tiles]
    with Prefetcher(info.path, info.bands, reader.scaling, reader.grid, grid.tiles,
                    depth=3, threads=4) as tiles:
        got = [(tile.index, image) for tile, image in tiles]
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected))


def test_closing_early_stops_every_reading_thread(tmp_path):
    path = write_raster(tmp_path / "c.tif", np.full((200, 200, 3), 9, np.uint8))
    _, info, reader = _reader(path)
    grid = tile_grid(200, 200, 32, 0)
    before = threading.active_count()
    with Prefetcher(info.path, info.bands, reader.scaling, reader.grid, grid.tiles,
                    depth=4, threads=3) as tiles:
        first = next(iter(tiles))
    assert first[0].index == 0
    assert threading.active_count() == before


def test_reader_threads_default_to_one_on_cpu_and_several_on_a_gpu():
    assert reader_threads_for("cpu") == 1
    assert reader_threads_for("cuda:0") >= 1
    assert reader_threads_for("cpu", 3) == 3
    with pytest.raises(UserError):
        reader_threads_for("cpu", 0)
