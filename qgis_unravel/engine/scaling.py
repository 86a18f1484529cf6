"""Mapping raster values to the 8-bit RGB the network was trained on.

uint8 rasters pass through. Anything else gets one linear stretch for the whole run, from
the 2nd to the 98th percentile of valid pixels (or a user min/max): computing it once,
from overviews or a spread-out sample, keeps tiles consistent and never reads the raster
in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .errors import UserError

LOW_PERCENT, HIGH_PERCENT = 2.0, 98.0
OVERVIEW_SIDE = 1024  # longest side of the decimated read used when overviews exist
SAMPLE_GRID = 8  # SAMPLE_GRID x SAMPLE_GRID windows ...
SAMPLE_WINDOW = 128  # ... of this many pixels a side, when there are no overviews
FALLBACK_SIDE = 256  # decimated full read when the sample finds no valid pixel


@dataclass(frozen=True)
class Scaling:
    """Per-band linear map ``(v - low) / (high - low) * 255``; identity when ``low`` is None."""

    low: Optional[np.ndarray] = None
    high: Optional[np.ndarray] = None

    def to_uint8(self, data: np.ndarray) -> np.ndarray:
        """``data`` (3, h, w) of any real dtype -> uint8, clipped."""
        if self.low is None:
            if data.dtype == np.uint8:
                return data
            return np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8)
        low = self.low.reshape(-1, 1, 1)
        span = (self.high - self.low).reshape(-1, 1, 1)
        out = (data.astype(np.float32) - low) * (255.0 / span)
        np.nan_to_num(out, copy=False)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fixed_scaling(value_range: Tuple[float, float]) -> Scaling:
    """The user's min/max for every band."""
    low, high = float(value_range[0]), float(value_range[1])
    if not np.isfinite([low, high]).all() or high <= low:
        raise UserError(f"value range {low},{high} is invalid; give MIN,MAX with MIN < MAX")
    return Scaling(np.full(3, low, np.float32), np.full(3, high, np.float32))


def valid_sample(ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> np.ndarray:
    """Valid pixel values (3, n) from overviews or a spread-out sample of windows.

    Raises a user error when no valid pixel turns up at all (all nodata, masked or NaN).
    """
    if ds.overviews(bands[0]):
        values = _decimated(ds, bands, OVERVIEW_SIDE)
    else:
        values = _windows_sample(ds, bands)
    if values.shape[1] == 0:
        values = _decimated(ds, bands, FALLBACK_SIDE)
    if values.shape[1] == 0:
        raise UserError(f"{ds.name} has no valid pixels (everything is nodata, masked or NaN)")
    return values


def stretch_scaling(values: np.ndarray) -> Scaling:
    """2-98 % stretch from sampled valid values (3, n)."""
    low = np.percentile(values, LOW_PERCENT, axis=1).astype(np.float32)
    high = np.percentile(values, HIGH_PERCENT, axis=1).astype(np.float32)
    high = np.where(high > low, high, low + 1.0).astype(np.float32)
    return Scaling(low, high)


def choose_scaling(
    ds: rasterio.io.DatasetReader, bands: Sequence[int], value_range: Optional[Tuple[float, float]]
) -> Scaling:
    """The scaling of a run; also proves the raster has valid pixels."""
    is_uint8 = ds.dtypes[bands[0] - 1] == "uint8"
    if value_range is not None:
        if not all_valid(ds, bands):
            valid_sample(ds, bands)
        return fixed_scaling(value_range)
    if is_uint8:
        if not all_valid(ds, bands):
            valid_sample(ds, bands)
        return Scaling()
    return stretch_scaling(valid_sample(ds, bands))


def all_valid(ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> bool:
    """True when every pixel is valid by construction: no nodata, mask or alpha, integer type."""
    if ds.dtypes[bands[0] - 1].startswith("float"):
        return False
    return all(ds.mask_flag_enums[b - 1] == [MaskFlags.all_valid] for b in set(bands))


def read_valid(
    ds: rasterio.io.DatasetReader,
    bands: Sequence[int],
    window: Optional[Window] = None,
    out_shape: Optional[Tuple[int, int]] = None,
    resampling: Resampling = Resampling.nearest,
) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` and their joint validity mask (nodata, alpha, mask band, NaN)."""
    unique = sorted(set(bands))
    shape = None if out_shape is None else (len(unique), *out_shape)
    try:
        data = ds.read(unique, window=window, out_shape=shape, resampling=resampling)
        masks = ds.read_masks(unique, window=window, out_shape=shape, resampling=Resampling.nearest)
    except (RasterioError, OSError) as exc:  # RasterioIOError is an OSError
        where = "" if window is None else f" near pixel ({int(window.col_off)}, {int(window.row_off)})"
        raise UserError(f"cannot read pixels of {ds.name}{where}: the file may be truncated or "
                        f"corrupt ({_first_line(exc)})") from None
    valid = (masks > 0).all(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    order = [unique.index(b) for b in bands]
    return data[order], valid


def _decimated(ds: rasterio.io.DatasetReader, bands: Sequence[int], side: int) -> np.ndarray:
    scale = min(1.0, side / max(ds.width, ds.height))
    shape = (max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
    data, valid = read_valid(ds, bands, out_shape=shape)
    return data[:, valid].astype(np.float64)


def _windows_sample(ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> np.ndarray:
    size_x, size_y = min(SAMPLE_WINDOW, ds.width), min(SAMPLE_WINDOW, ds.height)
    xs = np.unique(np.linspace(0, ds.width - size_x, SAMPLE_GRID).round().astype(int))
    ys = np.unique(np.linspace(0, ds.height - size_y, SAMPLE_GRID).round().astype(int))
    parts = []
    for y in ys:
        for x in xs:
            data, valid = read_valid(ds, bands, window=Window(int(x), int(y), size_x, size_y))
            parts.append(data[:, valid].astype(np.float64))
    return np.concatenate(parts, axis=1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
