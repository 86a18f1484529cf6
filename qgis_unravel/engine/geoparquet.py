"""Writing detections as GeoParquet, the columnar format of large vector jobs (geopandas).

The columns are the GeoPackage's fields plus the window each box was kept from
(``window_x0, window_y0, window_width, window_height`` in processing pixels). One file
(``out.parquet``) holds every raster; for large jobs ``partition=True`` writes a folder
with one file per source raster (``out.parquet/part-000000.parquet`` ...), which
``geopandas.read_parquet`` and pyarrow datasets read as one table. Like the GeoPackage
writer, everything is written beside the destination first and moved into place at the
end, so a failure never leaves a half-written output.

geopandas and pyarrow come with the ``cluster`` extra and are imported only here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UserError
from .result import FIELD_NAMES, RasterDetections
from .writer import polygon_wkb

WINDOW_FIELDS = ("window_x0", "window_y0", "window_width", "window_height")
PARQUET_EXTENSIONS = (".parquet", ".geoparquet")


def is_parquet(path: Any) -> bool:
    return Path(os.fspath(path)).suffix.lower() in PARQUET_EXTENSIONS


def check_parquet_output(path: Any, overwrite: bool) -> None:
    """Fail before any work when the output cannot be written (no libraries, exists, no folder)."""
    _libraries()
    path = Path(os.fspath(path)).expanduser().absolute()
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; use --overwrite to replace it")


def write_geoparquet(results: Sequence[RasterDetections], path: Any, partition: bool = False,
                     overwrite: bool = False) -> int:
    """Write the results (one per source raster, in order); return the number of features."""
    path = Path(os.fspath(path)).expanduser().absolute()
    check_parquet_output(path, overwrite)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        target = tmp_dir / path.name
        if partition:
            target.mkdir()
            for index, result in enumerate(results):
                to_frame([result]).to_parquet(target / f"part-{index:06d}.parquet", index=False)
        else:
            to_frame(results).to_parquet(target, index=False)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(target, path)
    except OSError as exc:
        raise UserError(f"could not write {path}: {exc}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return sum(len(r) for r in results)


def to_frame(results: Sequence[RasterDetections]) -> Any:
    """One GeoDataFrame of the results' features (they must share a CRS)."""
    geopandas, shapely = _libraries()
    crs = results[0].crs_wkt if results else None
    if any(r.crs_wkt != crs for r in results):
        raise UserError("the rasters are in different CRSs; write a partitioned GeoParquet (--partition)")
    columns = {name: [] for name in FIELD_NAMES + WINDOW_FIELDS}
    geometries = []
    for result in results:
        for record in result.records():
            for name in FIELD_NAMES:
                columns[name].append(record[name])
        windows = result.windows if result.windows is not None else np.full((len(result), 4), -1)
        for name, values in zip(WINDOW_FIELDS, np.asarray(windows, np.int64).reshape(-1, 4).T):
            columns[name] += values.tolist()
        polygons = np.asarray(result.polygons, np.float64).reshape(-1, 4, 2)
        geometries += list(shapely.from_wkb(polygon_wkb(polygons)))
    frame = geopandas.GeoDataFrame(columns, geometry=geopandas.GeoSeries(geometries, crs=crs))
    for name in ("class_id",) + WINDOW_FIELDS:
        frame[name] = frame[name].astype("int64")
    for name in ("score", "angle_deg", "length_m", "width_m", "area_m2"):
        frame[name] = frame[name].astype("float64")
    return frame


def _libraries() -> Any:
    try:
        import geopandas
        import pyarrow  # noqa: F401  (to_parquet's engine)
        import shapely
    except ImportError:
        raise UserError("GeoParquet output needs geopandas and pyarrow: "
                        "pip install 'qgis-unravel[cluster]'") from None
    return geopandas, shapely
