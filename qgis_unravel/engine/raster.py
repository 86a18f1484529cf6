"""Opening a raster with rasterio and describing it: size, bands, georeferencing.

Every way a file can be unusable (missing, not a raster, too small, no usable bands)
becomes a ``UserError`` with one clear line, so the CLI never shows a traceback for them.

Remote rasters (``/vsicurl/``, ``https://``, ``/vsis3/`` ...) get HTTP timeouts unless the user
set their own (a server that stops answering would otherwise hang GDAL forever, deaf to Ctrl-C),
and their slow calls run in a helper thread so a cancel (Ctrl-C, the plugin's Cancel) is
honoured at once instead of when GDAL returns.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar

import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine

from .errors import Cancelled, UserError
from .georef import UNGEOREFERENCED_TRANSFORM, Placement, placement  # noqa: F401 (re-exported)

MIN_SIDE = 4
# GDAL's network settings, used unless the environment already sets them: seconds for a whole
# request, for connecting, and retries of a failed request.
NETWORK_DEFAULTS = {"GDAL_HTTP_TIMEOUT": "60", "GDAL_HTTP_CONNECTTIMEOUT": "20",
                    "GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "1"}
CANCEL_POLL_S = 0.1
T = TypeVar("T")


def is_remote(source: Any) -> bool:
    path = os.fspath(source)
    return "://" in path or path.startswith("/vsi")


def network_defaults() -> None:
    """Give GDAL HTTP timeouts (through the environment, which every GDAL build reads)."""
    for name, value in NETWORK_DEFAULTS.items():
        os.environ.setdefault(name, value)


def cancellable(work: Callable[[], T], cancel: Optional[threading.Event]) -> T:
    """Run ``work`` in a helper thread and wait for it, raising ``Cancelled`` as soon as ``cancel``
    is set (a GDAL call waiting on the network cannot be interrupted; it is abandoned)."""
    if cancel is None:
        return work()
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    helper = threading.Thread(target=run, name="qgis-unravel-open", daemon=True)
    helper.start()
    while helper.is_alive():
        if cancel.is_set():
            raise Cancelled()
        helper.join(CANCEL_POLL_S)
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about an input raster."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    bands: Tuple[int, int, int]
    crs_wkt: Optional[str]
    transform: Affine
    georeferenced: bool
    place: Optional[Placement] = None


def open_dataset(source: Any) -> rasterio.io.DatasetReader:
    """Open ``source`` for reading; a user error for files GDAL cannot read."""
    path = os.fspath(source)
    remote = is_remote(path)
    if remote:
        network_defaults()
    if not remote and not Path(path).exists():
        raise UserError(f"input raster not found: {path}")
    if not remote and Path(path).is_dir():
        raise UserError(f"input is a folder, not a raster file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise UserError(f"cannot read {path} as a raster ({_first_line(exc)})") from None


def inspect(source: Any, bands: Optional[Sequence[int]] = None,
            cancel: Optional[threading.Event] = None) -> RasterInfo:
    """Open and describe ``source``; cancellable while a remote server keeps GDAL waiting."""

    def work() -> RasterInfo:
        with open_dataset(source) as ds:
            return describe(ds, bands)

    return cancellable(work, cancel if is_remote(source) else None)


def describe(ds: rasterio.io.DatasetReader, bands: Optional[Sequence[int]] = None) -> RasterInfo:
    """Check that ``ds`` is usable and collect its size, bands and georeferencing."""
    if ds.width < MIN_SIDE or ds.height < MIN_SIDE:
        raise UserError(
            f"{ds.name} is {ds.width} x {ds.height} pixels; detection needs at least "
            f"{MIN_SIDE} x {MIN_SIDE}"
        )
    chosen = choose_bands(ds, bands)
    dtype = ds.dtypes[chosen[0] - 1]
    if dtype == "complex" or dtype.startswith("complex"):
        raise UserError(f"{ds.name} has complex-valued pixels, which cannot be shown as RGB")
    place = placement(ds.transform, ds.crs.to_wkt() if ds.crs else None)
    local = Path(ds.name)
    return RasterInfo(
        path=str(local.resolve()) if local.exists() else ds.name,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=dtype,
        bands=chosen,
        crs_wkt=place.crs_wkt,
        transform=place.transform,
        georeferenced=place.georeferenced,
        place=place,
    )


def choose_bands(ds: rasterio.io.DatasetReader, requested: Optional[Sequence[int]]) -> Tuple[int, int, int]:
    """Three 1-based band indices to read as R, G, B.

    An explicit choice of one band is replicated to grey; three bands are used as given.
    Without a choice: the bands whose colour interpretation is red, green and blue, else
    the first three bands that are not alpha, else a single non-alpha band as grey.
    """
    if requested:
        bad = [b for b in requested if not 1 <= int(b) <= ds.count]
        if bad:
            raise UserError(f"band {bad[0]} does not exist; {ds.name} has bands 1 to {ds.count}")
        if len(requested) == 1:
            return (int(requested[0]),) * 3
        if len(requested) == 3:
            return tuple(int(b) for b in requested)  # type: ignore[return-value]
        raise UserError(f"give 1 or 3 bands (e.g. --bands 1 or --bands 3,2,1), not {len(requested)}")
    interp = list(ds.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in wanted):
        return tuple(interp.index(c) + 1 for c in wanted)  # type: ignore[return-value]
    colour = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(colour) >= 3:
        return (colour[0], colour[1], colour[2])
    if len(colour) == 1:
        return (colour[0],) * 3
    raise UserError(
        f"{ds.name} has {ds.count} bands and no red/green/blue ones; choose them with "
        "--bands (one band for grey, or three for R,G,B)"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
