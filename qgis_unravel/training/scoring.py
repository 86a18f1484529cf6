"""Collecting what ``evaluate`` compares: ground truth and detections per raster, as le90 boxes
in each raster's pixel space (detections come from a model run or from detection layers)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .evaluate import ImageDetections
from .labels import RasterLabels, read_labels


def raster_georef(path) -> Tuple[object, Optional[str]]:
    """(affine transform, CRS WKT or None) of a raster."""
    import rasterio

    with rasterio.open(path) as src:
        return src.transform, (src.crs.to_wkt() if src.crs else None)


def truths_for(
    rasters: Sequence[str], labels: Sequence[str], class_field: str = "class", layer: Optional[str] = None
) -> Tuple[List[RasterLabels], List[List[str]]]:
    """Ground truth of each raster and its class names."""
    truths = []
    for raster, lab in zip(rasters, labels):
        transform, crs = raster_georef(raster)
        truths.append(read_labels(lab, transform, crs, class_field, layer))
    return truths, [t.names for t in truths]


def detections_from_model(
    model: str,
    rasters: Sequence[str],
    device: str = "cpu",
    tile_size: Optional[int] = None,
    overlap: Optional[int] = None,
    score_threshold: float = 0.05,
):
    """Run a detector (card id or checkpoint path) over each raster as ``detect`` would.

    The run settings are resolved by the engine's one rule (explicit > card > default); only
    the score threshold is explicit, low by default, as mAP needs the whole ranking.
    """
    from ..detector.checkpoint import load_detector
    from ..engine.detect import detect_raster
    from ..engine.spec import ModelDefaults, RunSpec
    from ..zoo.compat import apply_card
    from ..zoo.resolve import resolve_model

    path, card = resolve_model(model)
    detector = load_detector(path, device=device)
    if card is not None:
        apply_card(detector, card)
        defaults = ModelDefaults.from_card(card)
    else:
        defaults = ModelDefaults.from_info(detector.info, name=Path(path).stem)
    spec = RunSpec(model=str(model), device=device, tile_size=tile_size, overlap=overlap,
                   score_threshold=score_threshold).resolve(defaults)
    dets = []
    for raster in rasters:
        result = detect_raster(str(raster), detector, spec)
        dets.append(
            ImageDetections(
                np.asarray(result.boxes_px, dtype=np.float64).reshape(-1, 5),
                np.asarray(result.scores, dtype=np.float64),
                np.asarray(result.class_ids, dtype=np.int64),
            )
        )
    return dets, list(detector.classes)


def detections_from_layer(
    layers: Sequence[str], rasters: Sequence[str], class_field: str = "class_name", score_field: str = "score"
):
    """Detections stored as polygon layers (e.g. by ``qgis-unravel detect``), one per raster."""
    per_raster, names = [], []
    for layer_path, raster in zip(layers, rasters):
        transform, crs = raster_georef(raster)
        found = read_labels(layer_path, transform, crs, class_field, None, score_field=score_field)
        per_raster.append(found)
        names += found.names
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    dets = [
        ImageDetections(
            r.boxes,
            np.asarray(r.scores, dtype=np.float64),
            np.array([index[n] for n in r.names], dtype=np.int64),
        )
        for r in per_raster
    ]
    return dets, classes
