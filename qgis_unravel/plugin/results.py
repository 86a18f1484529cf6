"""Turn the worker's GeoPackage into the layer the user gets (on the main thread only)."""

from __future__ import annotations

from qgis.core import QgsFeatureRequest, QgsVectorLayer

from . import styling

PARTIAL_SUFFIX = " (partial)"


class ResultError(RuntimeError):
    """The worker said it wrote a layer that QGIS cannot open."""


def open_output(path: str, layer_name: str, display_name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", display_name, "ogr")
    if not layer.isValid():
        raise ResultError(f"QGIS cannot open the detections in {path} (layer {layer_name})")
    return layer


def class_filter_expression(classes: list[str]) -> str:
    quoted = ", ".join("'" + name.replace("'", "''") + "'" for name in classes)
    return f'"class_name" IN ({quoted})'


def keep_classes(layer: QgsVectorLayer, classes: list[str]) -> int:
    """Delete features of other classes from a file layer; return how many remain."""
    if not classes:
        return layer.featureCount()
    request = QgsFeatureRequest().setFilterExpression(f"NOT ({class_filter_expression(classes)})")
    request.setFlags(QgsFeatureRequest.Flag.NoGeometry)
    doomed = [feature.id() for feature in layer.getFeatures(request)]
    if doomed:
        layer.dataProvider().deleteFeatures(doomed)
        layer.updateExtents()
    return layer.featureCount()


def to_memory(layer: QgsVectorLayer, name: str, classes: list[str]) -> QgsVectorLayer:
    """A temporary (memory) copy, holding only the kept classes."""
    request = QgsFeatureRequest()
    if classes:
        request.setFilterExpression(class_filter_expression(classes))
    copy = layer.materialize(request)
    copy.setName(name)
    return copy


def model_classes(result: dict, known: list[str] | None = None) -> list[str]:
    """The model's full class list, from the worker's answer (it loaded the model, so it knows
    a checkpoint's classes too), else what the card said."""
    listed = result.get("classes")
    if isinstance(listed, list) and listed and all(isinstance(name, str) for name in listed):
        return list(listed)
    return list(known or [])


def display_name(base: str, partial: bool) -> str:
    return base + (PARTIAL_SUFFIX if partial else "")


def build_layer(result: dict, temporary: bool, base_name: str, classes: list[str],
                known_classes: list[str] | None = None, labels: bool = False) -> QgsVectorLayer:
    """Open, filter, style and name the result of one run."""
    name = display_name(base_name, bool(result.get("partial")))
    source = open_output(str(result["output"]), str(result.get("layer") or "detections"), name)
    if temporary:
        layer = to_memory(source, name, classes)
    else:
        keep_classes(source, classes)
        layer = source
    styling.apply_class_style(layer, model_classes(result, known_classes))
    styling.apply_labels(layer, labels)
    layer.setCustomProperty("qgis_unravel/result", True)
    layer.setCustomProperty("qgis_unravel/model", str(result.get("model", "")))
    return layer


def is_result_layer(layer) -> bool:
    """A layer made by this plugin, or any layer with the engine's score field."""
    if not isinstance(layer, QgsVectorLayer):
        return False
    if layer.customProperty("qgis_unravel/result", False) in (True, "true"):
        return True
    names = set(layer.fields().names())
    return {"score", "class_name"} <= names
