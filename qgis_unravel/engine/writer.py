"""Writing detections to a GeoPackage (or any OGR vector format) atomically.

Everything is written into a temporary folder beside the destination, then moved into
place with ``os.replace``: a failure (disk full, bad path) or a cancel leaves the old file
as it was, never a half-written one. Adding a layer to an existing GeoPackage works on a
copy of it for the same reason. An existing layer is only replaced with ``overwrite`` or
extended with ``append``. GeoPackages get the QML style in their ``layer_styles`` table (so
QGIS opens the layer styled); file formats get it as a ``.qml`` sidecar.

Concurrent runs writing into the same folder take turns (``outlock``): each one's check of the
existing layers, copy, write and replace happen under an exclusive lock, so no update is lost
and no run silently replaces a file another one just wrote. A write killed midway leaves its
temporary folder behind; the next write to the same path removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import Cancelled, UserError
from .outlock import PARTIAL_SUFFIX, output_lock, partial_prefix, remove_stale_partials
from .result import RasterDetections
from .style import categorized_qml

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

DRIVERS_BY_EXTENSION = {
    ".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON",
    ".fgb": "FlatGeobuf", ".gml": "GML", ".kml": "KML", ".sqlite": "SQLite",
    ".geojsonl": "GeoJSONSeq", ".geojsons": "GeoJSONSeq", ".tab": "MapInfo File",
}
FIELDS = (
    ("class_id", ogr.OFTInteger), ("class_name", ogr.OFTString), ("score", ogr.OFTReal),
    ("angle_deg", ogr.OFTReal), ("length_m", ogr.OFTReal), ("width_m", ogr.OFTReal),
    ("area_m2", ogr.OFTReal), ("model", ogr.OFTString), ("source", ogr.OFTString),
)
STYLE_TABLE = "layer_styles"
CHUNK = 5000  # features per cancel check


@dataclass(frozen=True)
class WriteReport:
    path: str
    layer: str
    count: int


def driver_for(path: Path) -> str:
    """The OGR driver name for a path's extension; a user error for unknown ones."""
    ext = path.suffix.lower()
    if ext in DRIVERS_BY_EXTENSION:
        return DRIVERS_BY_EXTENSION[ext]
    for i in range(ogr.GetDriverCount()):
        drv = ogr.GetDriver(i)
        meta = drv.GetMetadata() or {}
        if meta.get("DCAP_CREATE") == "YES" and ext[1:] in (meta.get("DMD_EXTENSIONS") or "").split():
            return drv.GetName()
    raise UserError(f"no vector format known for '{ext or path.name}'; use .gpkg, .shp, .geojson or .fgb")


def write_detections(
    result: RasterDetections, path: Any, layer: Optional[str] = None, overwrite: bool = False,
    append: bool = False, cancel: Optional[threading.Event] = None,
) -> WriteReport:
    """Write ``result`` to ``path`` (format from the extension) and return what was written."""
    with _locked_output(path, layer, overwrite, append, cancel) as (path, driver, layer, existing):
        count = _write_locked(result, path, driver, layer, existing, overwrite, append, cancel)
    return WriteReport(str(path), layer, count)


def check_output(path: Any, layer: Optional[str] = None, overwrite: bool = False, append: bool = False,
                 crs_wkt: Optional[str] = None, cancel: Optional[threading.Event] = None) -> None:
    """Refuse, before any work, an output that ``write_detections`` would refuse after it.

    Checks the format, the folder, an existing layer (and, to append, its fields and CRS), then
    writes one dummy feature with the real writer into a temporary folder beside the output
    and removes it: a format that cannot hold these polygons (GPX, CSV) or a folder we cannot
    write in fails now, not after hours of detection. Nothing existing is touched.
    """
    with _locked_output(path, layer, overwrite, append, cancel) as (path, driver, layer, existing):
        if append and layer in existing:
            _check_appendable(path, layer, crs_wkt)
        _dry_run(path, driver, layer, crs_wkt)


@contextlib.contextmanager
def _locked_output(path: Any, layer: Optional[str], overwrite: bool, append: bool,
                   cancel: Optional[threading.Event]) -> Iterator[Tuple[Path, str, str, List[str]]]:
    """Check the output and hold its folder's writer lock: (path, driver, layer, existing layers).

    Leftovers of killed writes are removed first; an existing layer needs overwrite or append.
    """
    path = Path(os.fspath(path)).expanduser().absolute()
    if overwrite and append:
        raise UserError("--overwrite and --append exclude each other; choose one")
    driver = driver_for(path)
    layer = layer or path.stem
    _check_folder(path.parent)
    with output_lock(path.parent, cancel):
        remove_stale_partials(path)
        existing = _existing_layers(path, driver)
        if layer in existing and not (overwrite or append):
            raise UserError(f"layer '{layer}' already exists in {path}; "
                            "use --overwrite to replace it or --append to add to it")
        yield path, driver, layer, existing


def _check_appendable(path: Path, layer_name: str, crs_wkt: Optional[str]) -> None:
    ds = ogr.Open(str(path))
    try:
        layer = ds.GetLayerByName(layer_name)
        _check_fields(layer, layer_name)
        _check_crs(layer, layer_name, crs_wkt)
    finally:
        ds = None


def _dry_run(path: Path, driver: str, layer: str, crs_wkt: Optional[str]) -> None:
    """Write one dummy feature as ``driver`` beside ``path`` and delete it again."""
    one = np.ones(1)
    dummy = RasterDetections(polygons=np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]),
                             boxes_px=np.zeros((1, 5)), scores=one.astype(np.float32),
                             class_ids=np.zeros(1, np.int64), angle_deg=one, length_m=one,
                             width_m=one, area_m2=one, classes=["check"], crs_wkt=crs_wkt)
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=partial_prefix(path), suffix=PARTIAL_SUFFIX, dir=path.parent))
    except OSError as exc:
        raise UserError(f"cannot write in {path.parent}: {_one_line(exc)}") from None
    try:
        _write(dummy, tmp_dir / path.name, driver, layer, False, False, False, None)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"cannot write detections as {driver} ({path.suffix or path.name}): "
                        f"{_one_line(exc)}; use .gpkg, .shp, .geojson or .fgb") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _write_locked(result: RasterDetections, path: Path, driver: str, layer: str, existing: List[str],
                  overwrite: bool, append: bool, cancel: Optional[threading.Event]) -> int:
    """The copy-write-replace sequence; the caller holds the folder's writer lock, so what it
    checked (``existing``) is still true when the file is replaced."""
    multi_layer = driver in ("GPKG", "SQLite")
    keep_old = path.exists() and (multi_layer or (append and layer in existing))
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=partial_prefix(path), suffix=PARTIAL_SUFFIX, dir=path.parent))
    except OSError as exc:
        raise UserError(f"could not write in {path.parent}: {_one_line(exc)}") from None
    try:
        target = tmp_dir / path.name
        if keep_old:
            for sidecar in _dataset_files(path, driver):
                shutil.copy2(sidecar, tmp_dir / sidecar.name)
        count = _write(result, target, driver, layer, keep_old, overwrite and layer in existing,
                       append and layer in existing, cancel)
        if not multi_layer:
            target.with_suffix(".qml").write_text(categorized_qml(result.classes), encoding="utf-8")
        for produced in sorted(tmp_dir.iterdir()):
            os.replace(produced, path.parent / produced.name)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"could not write {path}: {_one_line(exc)}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return count


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder is not writable: {folder}")


def _existing_layers(path: Path, driver: str) -> List[str]:
    if not path.exists():
        return []
    try:
        ds = ogr.Open(str(path))
    except RuntimeError:
        ds = None
    if ds is None:
        raise UserError(f"{path} exists but is not a {driver} file GDAL can open; choose another name")
    try:
        return [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]
    finally:
        ds = None


def _dataset_files(path: Path, driver: str) -> List[Path]:
    """The files making up a dataset (a shapefile has sidecars with the same stem)."""
    if driver in ("ESRI Shapefile", "MapInfo File"):
        return sorted(p for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() != ".qml")
    return [path]


def _write(result: RasterDetections, target: Path, driver: str, layer_name: str, update: bool,
           replace: bool, append: bool, cancel: Optional[threading.Event]) -> int:
    if update:
        ds = ogr.Open(str(target), update=1)
    else:
        ds = ogr.GetDriverByName(driver).CreateDataSource(str(target))
    if ds is None:
        raise RuntimeError(f"GDAL could not create a {driver} file")
    try:
        if replace:
            _delete_layer(ds, layer_name)
        layer = ds.GetLayerByName(layer_name) if append else None
        if layer is None:
            layer = _create_layer(ds, layer_name, result.crs_wkt, driver)
        else:
            _check_fields(layer, layer_name)
            _check_crs(layer, layer_name, result.crs_wkt)
        _write_features(layer, result, cancel)
        if driver == "GPKG":
            _store_style(ds, layer_name, layer.GetGeometryColumn() or "geom", categorized_qml(result.classes))
        ds.FlushCache()
    finally:
        ds = None  # closes and flushes; errors surface as RuntimeError
    return len(result)


def _delete_layer(ds: Any, name: str) -> None:
    for i in range(ds.GetLayerCount()):
        if ds.GetLayer(i).GetName() == name:
            ds.DeleteLayer(i)
            return


def _create_layer(ds: Any, name: str, crs_wkt: Optional[str], driver: str) -> Any:
    srs = None
    if crs_wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(crs_wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    elif driver == "GPKG":
        srs = undefined_cartesian_srs()
    options = ["GEOMETRY_NAME=geom"] if driver == "GPKG" else []
    layer = ds.CreateLayer(name, srs=srs, geom_type=ogr.wkbPolygon, options=options)
    for field_name, kind in FIELDS:
        layer.CreateField(ogr.FieldDefn(field_name, kind))
    return layer


def undefined_cartesian_srs() -> Any:
    """The GeoPackage's srs_id -1 ("undefined Cartesian"): QGIS then draws the layer untransformed,
    as it draws a raster without CRS. Without it GDAL would use srs_id 0, an undefined
    *geographic* CRS that QGIS reprojects far away from the image."""
    srs = osr.SpatialReference()
    srs.SetLocalCS("Undefined cartesian SRS")
    return srs


def _check_fields(layer: Any, name: str) -> None:
    defn = layer.GetLayerDefn()
    present = {defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())}
    missing = [f for f, _ in FIELDS if f not in present]
    if missing:
        raise UserError(f"cannot append to layer '{name}': it lacks the fields {', '.join(missing)}")


def _check_crs(layer: Any, name: str, crs_wkt: Optional[str]) -> None:
    """Appending features in another CRS would put them in the wrong place silently."""
    existing = layer.GetSpatialRef()
    if crs_wkt is None or existing is None:
        same = crs_wkt is None and (existing is None or "Undefined" in existing.ExportToWkt())
    else:
        ours = osr.SpatialReference()
        ours.ImportFromWkt(crs_wkt)
        same = bool(existing.IsSame(ours))
    if not same:
        raise UserError(f"cannot append to layer '{name}': it has another CRS than this raster; "
                        "write to a new layer (--layer) or use --overwrite")


def polygon_wkb(polygons: np.ndarray) -> List[bytes]:
    """(N, 4, 2) corners -> little-endian WKB polygons with a closed ring of 5 points."""
    n = len(polygons)
    record = np.dtype([("order", "u1"), ("kind", "<u4"), ("rings", "<u4"), ("points", "<u4"),
                       ("xy", "<f8", (5, 2))])
    out = np.zeros(n, dtype=record)
    out["order"], out["kind"], out["rings"], out["points"] = 1, 3, 1, 5
    out["xy"][:, :4] = polygons
    out["xy"][:, 4] = polygons[:, 0]
    raw = out.tobytes()
    size = record.itemsize
    return [raw[i * size:(i + 1) * size] for i in range(n)]


def _write_features(layer: Any, result: RasterDetections, cancel: Optional[threading.Event]) -> None:
    defn = layer.GetLayerDefn()
    wkbs = polygon_wkb(np.asarray(result.polygons, dtype=np.float64).reshape(-1, 4, 2))
    layer.StartTransaction()
    for i, (record, wkb) in enumerate(zip(result.records(), wkbs)):
        if cancel is not None and i % CHUNK == 0 and cancel.is_set():
            raise Cancelled()
        feature = ogr.Feature(defn)
        for key, value in record.items():
            if value is None:
                feature.SetFieldNull(key)
            else:
                feature.SetField(key, value)
        feature.SetGeometryDirectly(ogr.CreateGeometryFromWkb(wkb))
        layer.CreateFeature(feature)
    layer.CommitTransaction()


def _store_style(ds: Any, layer_name: str, geometry_column: str, qml: str) -> None:
    """Put the QML in ``layer_styles`` as the default style, the table QGIS reads."""
    table = ds.GetLayerByName(STYLE_TABLE)
    if table is None:
        table = ds.CreateLayer(STYLE_TABLE, geom_type=ogr.wkbNone)
        for name, kind, width in (
            ("f_table_catalog", ogr.OFTString, 256), ("f_table_schema", ogr.OFTString, 256),
            ("f_table_name", ogr.OFTString, 256), ("f_geometry_column", ogr.OFTString, 256),
            ("styleName", ogr.OFTString, 30), ("styleQML", ogr.OFTString, 0),
            ("styleSLD", ogr.OFTString, 0), ("useAsDefault", ogr.OFTInteger, 0),
            ("description", ogr.OFTString, 0), ("owner", ogr.OFTString, 30),
            ("ui", ogr.OFTString, 30), ("update_time", ogr.OFTDateTime, 0),
        ):
            field = ogr.FieldDefn(name, kind)
            if width:
                field.SetWidth(width)
            if name == "useAsDefault":
                field.SetSubType(ogr.OFSTBoolean)
            table.CreateField(field)
    table.SetAttributeFilter(f"f_table_name = '{layer_name.replace(chr(39), chr(39) * 2)}'")
    stale = [f.GetFID() for f in table]
    table.SetAttributeFilter(None)
    for fid in stale:
        table.DeleteFeature(fid)
    feature = ogr.Feature(table.GetLayerDefn())
    now = datetime.now(timezone.utc)
    values = {"f_table_catalog": "", "f_table_schema": "", "f_table_name": layer_name,
              "f_geometry_column": geometry_column, "styleName": layer_name[:30], "styleQML": qml,
              "styleSLD": "", "useAsDefault": 1, "description": "qgis-unravel detections by class",
              "owner": "", "ui": ""}
    for key, value in values.items():
        feature.SetField(key, value)
    feature.SetField("update_time", now.year, now.month, now.day, now.hour, now.minute, now.second, 100)
    table.CreateFeature(feature)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
