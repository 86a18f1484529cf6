"""Processing algorithm ``unravel:detect``: the dialog's options as parameters, a feature sink out.

The network runs in the same worker process as the dialog's (never torch in QGIS): the worker
writes a temporary GeoPackage, whose features are then copied into the sink, so every output
format Processing offers works. Progress and cancel go through ``feedback``; every user mistake
becomes a QgsProcessingException with a message, never a traceback.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

from qgis.core import (
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ... import paths
from ...engine.spec import RunSpec
from .. import extent as extents
from .. import model_list, raster_source, results, runtime, settings, styling
from ..jobs import known_classes, recommended_spec, temp_dir
from ..request import SpecError, build_spec, parse_classes
from ..worker_client import WorkerError

DEVICES = ["auto", "cpu", "cuda", "cuda:1", "cuda:2", "cuda:3"]  # "cuda" is the first GPU
POLYGONS = QgsProcessing.SourceType.TypeVectorPolygon
_POST_PROCESSORS: list = []  # Processing holds them weakly: keep them alive here


class StyleByClass(QgsProcessingLayerPostProcessorInterface):
    """Give the loaded output the categorized class style (and labels when asked)."""

    def __init__(self, classes: list[str], labels: bool):
        super().__init__()
        self.classes = classes
        self.labels = labels

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS name)
        if isinstance(layer, QgsVectorLayer):
            styling.apply_class_style(layer, self.classes)
            styling.apply_labels(layer, self.labels)


def card_value_widget(param, field: str):
    """``param`` with the form widget that shows the chosen model's ``RunSpec.<field>`` while
    empty (``card_widgets.CardValueWrapper``, named by path: loaded only by a Processing form)."""
    param.setMetadata({"widget_wrapper": {"class": f"{__package__}.card_widgets.CardValueWrapper",
                                          "field": field}})
    return param


def run_gsd(explicit: float | None, model: str, layer) -> float | None:
    """The processing resolution of a run, as the dialog preselects it: empty takes the model
    card's, 0 the raster's own pixels; None when the raster already has it (no resampling)."""
    gsd = model_list.card_gsd(model) if explicit is None else (explicit or None)
    return raster_source.effective_gsd(gsd, layer)


def card_settings_text() -> str:
    """One line per model card: the settings an empty knob takes for that model."""
    try:
        from ...zoo import list_cards

        cards = list_cards()
    except Exception:  # a broken card folder must not break the help text
        return ""
    lines = []
    for card in cards:
        spec = recommended_spec(card.id)
        gsd = model_list.card_resolution(card)
        lines.append(f"{card.id}: tile {spec.tile_size}, overlap {spec.overlap}, "
                     f"score {spec.score_threshold:g}, NMS IoU {spec.nms_iou:g}"
                     + (f", GSD {gsd:g} m/px" if gsd else ""))
    return "\n".join(lines)


class DetectAlgorithm(QgsProcessingAlgorithm):
    INPUT, MODEL, MODEL_FILE, DEVICE = "INPUT", "MODEL", "MODEL_FILE", "DEVICE"
    TILE, OVERLAP, BATCH, SCORE, IOU, GSD = "TILE", "OVERLAP", "BATCH", "SCORE", "IOU", "GSD"
    CLASSES, EXTENT, AOI, RESOLUTION, LABELS, OUTPUT = (
        "CLASSES", "EXTENT", "AOI", "RESOLUTION", "LABELS", "OUTPUT")

    def name(self) -> str:
        return "detect"

    def displayName(self) -> str:  # noqa: N802
        return "Detect oriented objects"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Detects objects (planes, ships, vehicles, storage tanks…) in a raster layer with an "
                "UnravelNet or LEGNet Oriented R-CNN and writes one oriented box polygon per object, "
                "with class, score, angle and size. Model: one of the models whose weights are "
                "available (the demo model is bundled); Checkpoint file: an mmrotate Oriented R-CNN "
                "checkpoint, used instead of the model when given. The network runs in a separate "
                "Python process with PyTorch (Raster > UnravelNet > Set up PyTorch…). An existing "
                "output file is replaced, as in every Processing algorithm.\n\nLeave TILE, "
                "OVERLAP, BATCH, SCORE, IOU and GSD empty to use the model's own settings (its "
                "card; a model without a GSD runs on the raster's own pixels, as does GSD 0):\n"
                + card_settings_text())

    def icon(self) -> QIcon:
        return QIcon(str(paths.resources_dir() / "icons" / "unravel.svg"))

    def createInstance(self):  # noqa: N802
        return DetectAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        remembered = settings.load()
        number = QgsProcessingParameterNumber
        integer, double = number.Type.Integer, number.Type.Double
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster layer"))
        runnable = [entry.id for entry in model_list.model_entries() if entry.runnable]
        default = model_list.default_model(model_list.model_entries(), remembered.model)
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=runnable, allowMultiple=False,
            defaultValue=default if default in runnable else (runnable[0] if runnable else None),
            optional=True, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL_FILE, "Checkpoint file (instead of the model)", extension="pth", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES,
                                                     defaultValue=0))
        # Empty run knobs take the model card's values (resolved by the worker, once); the form
        # shows those values while a knob is empty.
        knobs = (
            (self.TILE, "Tile size (pixels; empty: the model's)", integer, 64, 8192, "tile_size"),
            (self.OVERLAP, "Tile overlap (pixels; empty: the model's)", integer, 0, 4096, "overlap"),
            (self.BATCH, "Batch size (tiles; empty: automatic)", integer, 1, 256, "batch_size"),
            (self.SCORE, "Score threshold (empty: the model's)", double, 0.0, 1.0, "score_threshold"),
            (self.IOU, "NMS IoU (empty: the model's)", double, 0.0, 1.0, "nms_iou"),
            (self.GSD, "Processing resolution (m/px; empty: the model's, 0: the raster's own)",
             double, 0.0, 1000.0, "gsd"),
        )
        for name, label, kind, low, high, field in knobs:
            self.addParameter(card_value_widget(number(name, label, kind, None, True, low, high), field))
        self.addParameter(QgsProcessingParameterString(
            self.CLASSES, "Classes to keep (comma-separated, empty keeps all)", optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.AOI, "Only inside the polygons of", [POLYGONS], optional=True))
        self.addParameter(number(
            self.RESOLUTION, "Resolution for web and other non-file layers (layer units per pixel)",
            double, None, True, 0.0))
        self.addParameter(QgsProcessingParameterBoolean(self.LABELS, "Label with class and score", False))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Detections", POLYGONS))

    # -- running --------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster is None or not raster.isValid():
            raise QgsProcessingException("INPUT is not a raster layer QGIS can open")
        model = self._model(parameters, context)
        classes = parse_classes(self.parameterAsString(parameters, self.CLASSES, context) or "")
        try:
            request = build_spec(
                source="", output=os.path.join(temp_dir(), f"processing_{uuid.uuid4().hex[:8]}.gpkg"),
                model=model, device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                tile=self._optional(parameters, self.TILE, context, int),
                overlap=self._optional(parameters, self.OVERLAP, context, int),
                batch=self._optional(parameters, self.BATCH, context, int),
                score=self._optional(parameters, self.SCORE, context, float),
                iou=self._optional(parameters, self.IOU, context, float), classes=classes,
                gsd=run_gsd(self._optional(parameters, self.GSD, context, float), model, raster))
        except SpecError as exc:
            raise QgsProcessingException(str(exc)) from exc
        cleanup = [request.output]
        try:
            request = self._prepare_source(request, raster, parameters, context, feedback, cleanup)
            result = self._result = self._run(request, feedback)
            dest_id = self._write_sink(result, request, parameters, context, feedback)
        finally:
            for path in cleanup:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        try:
                            os.remove(path + suffix)
                        except OSError:
                            pass
        labels = self.parameterAsBool(parameters, self.LABELS, context)
        classes_of_model = results.model_classes(self._result, known_classes(model))
        self._written = (dest_id, classes_of_model, labels)
        if context.willLoadLayerOnCompletion(dest_id):
            processor = StyleByClass(classes_of_model, labels)
            _POST_PROCESSORS.append(processor)
            context.layerToLoadOnCompletionDetails(dest_id).setPostProcessor(processor)
        return {self.OUTPUT: dest_id}

    def _model(self, parameters, context) -> str:
        """The checkpoint file when given, else the chosen model; one clear message otherwise."""
        path = (self.parameterAsFile(parameters, self.MODEL_FILE, context) or "").strip()
        if path:
            if not os.path.isfile(path):
                raise QgsProcessingException(f"Checkpoint file not found: {path}")
            return path
        model = (self.parameterAsEnumString(parameters, self.MODEL, context) or "").strip()
        if not model:
            raise QgsProcessingException("Choose a Model, or a Checkpoint file (MODEL or MODEL_FILE)")
        return model

    def _optional(self, parameters, name: str, context, kind: type):
        """A run knob: None when left empty (the model's default), else its number."""
        if parameters.get(name) in (None, ""):
            return None
        if kind is int:
            return self.parameterAsInt(parameters, name, context)
        return self.parameterAsDouble(parameters, name, context)

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 (QGIS name)
        """Store the class style in a GeoPackage output, so it opens styled anywhere (qgis_process)."""
        dest_id, classes, labels = getattr(self, "_written", (None, [], False))
        path = str(dest_id or "").split("|")[0]
        if path.lower().endswith(".gpkg") and os.path.isfile(path):
            layer = QgsVectorLayer(str(dest_id), "detections", "ogr")
            if layer.isValid():
                styling.apply_class_style(layer, classes)
                styling.apply_labels(layer, labels)
                layer.saveStyleToDatabase("detections", "qgis-unravel: colours by class", True, "")
        return {}

    def _prepare_source(self, request: RunSpec, raster, parameters, context, feedback,
                        cleanup) -> RunSpec:
        """The spec with its ``input`` and ``aoi``; non-file layers exported to a temporary GeoTIFF."""
        rect = raster.extent()
        if parameters.get(self.EXTENT) not in (None, ""):
            wanted = self.parameterAsExtent(parameters, self.EXTENT, context, raster.crs())
            try:
                rect = extents.clip_to_layer(wanted, raster.extent())
            except extents.ExtentError as exc:
                raise QgsProcessingException(str(exc)) from exc
            request = replace(request, aoi=extents.bbox_text(rect))
        polygons = self.parameterAsVectorLayer(parameters, self.AOI, context)
        if polygons is not None:
            try:
                path, bounds = extents.polygons_file(polygons, raster.crs(), temp_dir())
            except extents.ExtentError as exc:
                raise QgsProcessingException(str(exc)) from exc
            cleanup.append(path)
            request = replace(request, aoi=path)
            rect = rect.intersect(bounds)
        source = raster_source.file_path(raster)
        if source is not None:
            return replace(request, input=source)
        resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context)
        if not resolution:
            raise QgsProcessingException(
                f"{raster.name()} is not a local file: set RESOLUTION (layer units per pixel) and "
                "an EXTENT so it can be fetched first")
        try:
            spec = raster_source.export_spec(raster, rect, resolution)
            feedback.pushInfo(f"Fetching {raster.name()} as {spec.width} x {spec.height} pixels…")
            request = replace(request, input=spec.write(temp_dir(), feedback))
        except raster_source.SourceError as exc:
            raise QgsProcessingException(str(exc)) from exc
        cleanup.append(request.input)
        if request.aoi and not os.path.isfile(request.aoi):
            request = replace(request, aoi=None)  # the export already covers exactly the extent
        return request

    def _run(self, request: RunSpec, feedback) -> dict:
        def on_event(message: dict) -> None:
            if message.get("type") == "progress" and message.get("total"):
                feedback.setProgress(100.0 * message["done"] / message["total"])
            elif message.get("type") in ("warning", "log"):
                feedback.pushInfo(str(message.get("message")))

        try:
            client = runtime.client()
            feedback.pushInfo(f"Worker Python: {client.python}")
            result = client.run(request, on_event, feedback.isCanceled)
        except WorkerError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            if not runtime.keep_warm():
                runtime.shutdown()
        if result.get("partial"):
            feedback.pushWarning("Cancelled: the output holds only what was found before the cancel.")
        return result

    def _write_sink(self, result: dict, request: RunSpec, parameters, context, feedback) -> str:
        try:
            found = results.open_output(str(result["output"]), str(result.get("layer") or "detections"),
                                        "detections")
        except results.ResultError as exc:
            raise QgsProcessingException(str(exc)) from exc
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, found.fields(),
                                             found.wkbType(), found.crs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        query = QgsFeatureRequest()
        if request.classes:
            query.setFilterExpression(results.class_filter_expression(request.classes))
        count = 0
        for feature in found.getFeatures(query):
            if feedback.isCanceled():
                break
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
            count += 1
        sink.flushBuffer()
        del sink  # closes the file before postProcessAlgorithm styles it
        feedback.pushInfo(f"{count} objects written.")
        return dest_id
