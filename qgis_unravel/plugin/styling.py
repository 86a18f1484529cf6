"""Style a results layer: one distinct colour per class, and optional labels.

The renderer is categorized on ``class_name`` so the legend reads like the model's class list.
It is the engine's QML (``qgis_unravel.engine.style``, also stored in the GeoPackages the
engine writes), built from the class list ordered by ``class_id`` so a class keeps its colour
in temporary layers, files and Processing outputs alike. Should that QML be unavailable, an
equivalent renderer is built here.
"""

from __future__ import annotations

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFeatureRequest,
    QgsFillSymbol,
    QgsPalLayerSettings,
    QgsRendererCategory,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtXml import QDomDocument

CLASS_FIELD = "class_name"
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000",
           "#aaffc3", "#808000", "#ffd8b1", "#000075", "#a9a9a9", "#ffe119")


def class_colour(index: int) -> QColor:
    if index < len(PALETTE):
        return QColor(PALETTE[index])
    hue = int((index - len(PALETTE)) * 137.508) % 360  # golden angle: well spread hues
    return QColor.fromHsv(hue, 200, 230)


def class_symbol(colour: QColor) -> QgsFillSymbol:
    """A translucent fill with a solid outline of the class colour."""
    r, g, b = colour.red(), colour.green(), colour.blue()
    return QgsFillSymbol.createSimple({
        "color": f"{r},{g},{b},60", "outline_color": f"{r},{g},{b},255",
        "outline_width": "0.5", "outline_width_unit": "MM"})


def class_names_of(layer: QgsVectorLayer, known: list[str] | None = None) -> list[str]:
    """The model's class order when known, else the classes present, sorted."""
    index = layer.fields().indexOf(CLASS_FIELD)
    present = sorted(str(v) for v in layer.uniqueValues(index)) if index >= 0 else []
    if known:
        return list(known) + [name for name in present if name not in known]
    return present


def classes_by_id(layer: QgsVectorLayer) -> list[str]:
    """Class names indexed by ``class_id``, from the features (gaps get placeholder names)."""
    ids, names = layer.fields().indexOf("class_id"), layer.fields().indexOf(CLASS_FIELD)
    if ids < 0 or names < 0:
        return []
    found: dict[int, str] = {}
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry)
    request.setSubsetOfAttributes([ids, names])
    for feature in layer.getFeatures(request):
        found.setdefault(int(feature[ids]), str(feature[names]))
    if not found:
        return []
    return [found.get(i, f"class {i}") for i in range(max(found) + 1)]


def import_engine_style(layer: QgsVectorLayer, classes: list[str]) -> bool:
    """Load the engine's categorized QML; False when it is unavailable or QGIS rejects it."""
    try:
        from ..engine.style import categorized_qml

        qml = categorized_qml(classes)
    except Exception:  # the style is a nicety: never fail a run over it
        return False
    doc = QDomDocument()
    if not doc.setContent(qml)[0]:
        return False
    ok, _message = layer.importNamedStyle(doc)
    return bool(ok) and layer.renderer() is not None and layer.renderer().type() == "categorizedSymbol"


def apply_class_style(layer: QgsVectorLayer, classes: list[str] | None = None) -> None:
    """A categorized renderer on ``class_name`` with one colour per class."""
    ordered = list(classes) if classes else classes_by_id(layer)
    if ordered and import_engine_style(layer, ordered):
        layer.triggerRepaint()
        return
    categories = []
    for i, name in enumerate(class_names_of(layer, classes)):
        categories.append(QgsRendererCategory(name, class_symbol(class_colour(i)), name))
    renderer = QgsCategorizedSymbolRenderer(CLASS_FIELD, categories)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def apply_labels(layer: QgsVectorLayer, enabled: bool = True) -> None:
    """Class name and score at each box, with a halo so they read on imagery."""
    if not enabled:
        layer.setLabelsEnabled(False)
        return
    settings = QgsPalLayerSettings()
    settings.isExpression = True
    settings.fieldName = "\"class_name\" || ' ' || format_number(\"score\", 2)"
    text = QgsTextFormat()
    text.setSize(8)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(0.8)
    text.setBuffer(buffer)
    settings.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)
    layer.triggerRepaint()
