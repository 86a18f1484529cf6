"""From the user's choices and the map to a fully resolved Job (main thread, no I/O-heavy work)."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from qgis.core import QgsRasterLayer, QgsRectangle, QgsVectorLayer

from ..engine.spec import ModelDefaults, RunSpec
from . import extent as extents
from . import raster_source
from .request import SpecError, build_spec, parse_classes
from .settings import Choices
from .task import Job


class JobError(ValueError):
    """A choice that cannot run; the message tells the user what to change."""


def temp_dir() -> str:
    folder = Path(tempfile.gettempdir()) / "qgis_unravel"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def view_raster_layer(iface) -> QgsRasterLayer | None:
    """The active layer if it is a raster, else the top visible raster of the canvas."""
    active = iface.activeLayer()
    if isinstance(active, QgsRasterLayer):
        return active
    for layer in iface.mapCanvas().layers():
        if isinstance(layer, QgsRasterLayer):
            return layer
    return None


def model_title(model: str) -> str:
    if not model:
        return "detections"
    return Path(model).stem if os.sep in model or model.endswith((".pth", ".pt")) else model


def known_classes(model: str) -> list[str]:
    """The class list of a model card (empty for a local checkpoint or an unknown name)."""
    try:
        from ..zoo import get_card

        return list(get_card(model).classes)
    except Exception:  # cards are optional: a local checkpoint has none
        return []


def recommended_spec(model: str) -> RunSpec:
    """What a run of ``model`` uses when the user sets nothing: the worker's own resolution
    (explicit > card > default) applied to an empty spec, for the dialog to show."""
    defaults = ModelDefaults()
    try:
        from ..zoo import get_card

        defaults = ModelDefaults.from_card(get_card(model))
    except Exception:  # a local checkpoint or an unknown name: the global defaults
        pass
    return RunSpec(model=model).resolve(defaults)


def area_of_interest(choices: Choices, layer: QgsRasterLayer, canvas,
                     drawn: QgsRectangle | None, drawn_crs,
                     polygons: QgsVectorLayer | None) -> tuple[str | None, QgsRectangle]:
    """``--aoi`` for the engine and the extent (layer CRS) it covers."""
    mode = choices.extent_mode
    if mode == "layer":
        return None, layer.extent()
    if mode == "canvas":
        settings = canvas.mapSettings()
        rect = extents.to_crs(settings.visibleExtent(), settings.destinationCrs(), layer.crs())
    elif mode == "drawn":
        if drawn is None or drawn.isEmpty():
            raise JobError("draw the extent on the map first (the \"Draw\" button)")
        rect = extents.to_crs(drawn, drawn_crs, layer.crs())
    elif mode == "polygons":
        path, rect = extents.polygons_file(polygons, layer.crs(), temp_dir())
        extents.clip_to_layer(rect, layer.extent())
        return path, rect.intersect(layer.extent())
    else:
        raise JobError(f"unknown extent choice {mode!r}")
    rect = extents.clip_to_layer(rect, layer.extent())
    return extents.bbox_text(rect), rect


def build_job(choices: Choices, layer: QgsRasterLayer, canvas, drawn: QgsRectangle | None = None,
              drawn_crs=None, polygons: QgsVectorLayer | None = None) -> Job:
    """Resolve every choice now, so the task thread only runs the plan."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise JobError("choose a valid raster layer")
    if not choices.model:
        raise JobError("choose a model (or \"Browse…\" for a checkpoint file)")
    if choices.output_mode == "file" and not choices.output_path:
        raise JobError("choose the GeoPackage file to write, or a temporary layer")
    try:
        aoi, rect = area_of_interest(choices, layer, canvas, drawn, drawn_crs, polygons)
    except extents.ExtentError as exc:
        raise JobError(str(exc)) from exc
    source = raster_source.file_path(layer)
    export = None
    if source is None:
        try:
            upp = raster_source.canvas_units_per_pixel(canvas, layer)
            export = raster_source.export_spec(layer, rect, upp)
        except raster_source.SourceError as exc:
            raise JobError(str(exc)) from exc
        aoi = aoi if choices.extent_mode == "polygons" else None  # the export is the extent
        source = ""
    temporary = choices.output_mode != "file"
    if temporary:
        output = os.path.join(temp_dir(), f"detections_{uuid.uuid4().hex[:8]}.gpkg")
        layer_name = "detections"
    else:
        output = choices.output_path
        if not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        layer_name = choices.output_layer or "detections"
    try:
        request = build_spec(
            source=source, output=output, layer=layer_name, model=choices.model, device=choices.device,
            tile=choices.tile, overlap=choices.overlap, batch=choices.batch, score=choices.score,
            iou=choices.iou, aoi=aoi, gsd=choices.gsd, classes=parse_classes(choices.classes))
    except SpecError as exc:
        raise JobError(str(exc)) from exc
    title = f"{model_title(choices.model)} – {layer.name()}" if temporary else layer_name
    cleanup = [aoi] if aoi and os.path.isfile(aoi) else []
    return Job(request=request, title=title, export=export, temporary=temporary,
               known_classes=known_classes(choices.model), open_output=choices.open_output or temporary,
               labels=choices.labels, cleanup=cleanup)
