"""The rasters of one job, from what was typed: paths, globs, VRT mosaics, STAC collections.

A path or a VRT is one raster (a VRT mosaic of many files is read as one large raster, its
windows spread over the workers like any other). A glob is every file it matches, sorted.
A STAC Item or ItemCollection (a ``.json`` file, read with pystac) gives one raster per
item: the asset named by ``asset``, else ``visual``, else the first GeoTIFF/COG asset.
The list is de-duplicated and keeps the order given, which is the order of the output.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import List, Optional, Sequence

from ..engine.errors import UserError

GLOB_CHARS = set("*?[")
RASTER_MEDIA = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2", "application/x-vrt")


def expand_inputs(items: Sequence[str], asset: Optional[str] = None) -> List[str]:
    """The rasters named by ``items``, in order, each once."""
    found: List[str] = []
    for item in items:
        if GLOB_CHARS & set(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise UserError(f"no file matches {item}")
            found += matches
        elif _is_stac(item):
            found += stac_rasters(item, asset)
        else:
            found.append(item)
    return list(dict.fromkeys(found))


def _is_stac(item: str) -> bool:
    """A local JSON file of type Feature (an Item) or FeatureCollection (an ItemCollection)."""
    path = Path(item)
    if path.suffix.lower() not in (".json", ".geojson") or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("stac_version" in data or "stac_extensions" in data
                                       or any("stac_version" in f for f in data.get("features", [])
                                              if isinstance(f, dict)))


def stac_rasters(path: str, asset: Optional[str] = None) -> List[str]:
    """The raster of each item of a STAC Item or ItemCollection file, in item order."""
    try:
        import pystac
    except ImportError:
        raise UserError("STAC inputs need pystac: pip install 'qgis-unravel[cluster]'") from None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        if data.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data, preserve_dict=False))
        else:
            items = [pystac.Item.from_dict(data)]
    except Exception as exc:  # pystac raises many kinds for a bad document
        raise UserError(f"{path} is not a valid STAC Item or ItemCollection: {exc}") from None
    base = Path(path).resolve().parent
    rasters = []
    for item in items:
        key = _asset_key(item, asset)
        if key is None:
            wanted = f"asset named '{asset}'" if asset else "GeoTIFF or 'visual' asset"
            raise UserError(f"STAC item {item.id} in {path} has no {wanted} (use --asset KEY)")
        href = item.assets[key].href
        rasters.append(href if "://" in href or Path(href).is_absolute() else str(base / href))
    return rasters


def _asset_key(item: object, asset: Optional[str]) -> Optional[str]:
    assets = item.assets  # type: ignore[attr-defined]
    if asset is not None:
        return asset if asset in assets else None
    if "visual" in assets:
        return "visual"
    for key, value in assets.items():
        media = (value.media_type or "").lower()
        if any(media.startswith(kind) for kind in RASTER_MEDIA) or "data" in (value.roles or []):
            return key
    return None
