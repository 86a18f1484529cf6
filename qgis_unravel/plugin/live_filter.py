"""A score slider in the toolbar that filters the shown detections live, without a re-run.

It sets a provider filter (``"score" >= x``) on the results layer: the features stay in the
layer's source, so moving the slider back down shows them again at once.
"""

from __future__ import annotations

import re

from qgis.core import QgsVectorLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QSlider, QWidget

from . import results

STEPS = 100


def score_expression(threshold: float) -> str:
    return "" if threshold <= 0 else f'"score" >= {threshold:.2f}'


def current_threshold(layer: QgsVectorLayer) -> float:
    """The threshold of a filter this module set (0 when there is none or another one)."""
    match = re.fullmatch(r'"score" >= ([0-9.]+)', layer.subsetString().strip())
    return float(match.group(1)) if match else 0.0


def apply_threshold(layer: QgsVectorLayer, threshold: float) -> bool:
    """Filter ``layer`` to scores >= threshold; False when the provider refuses the filter."""
    ok = layer.setSubsetString(score_expression(threshold))
    layer.triggerRepaint()
    return ok


class ScoreFilter:
    """The toolbar widget; it acts on the active layer when that is a results layer."""

    def __init__(self, iface, toolbar):
        self.iface = iface
        self.widget = QWidget()
        row = QHBoxLayout(self.widget)
        row.setContentsMargins(4, 0, 4, 0)
        self.label = QLabel("Score ≥ 0.00")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, STEPS)
        self.slider.setFixedWidth(120)
        self.slider.setToolTip("Hide detections below this score (no re-run)")
        self.slider.valueChanged.connect(self._changed)
        row.addWidget(self.label)
        row.addWidget(self.slider)
        self.toolbar = toolbar
        self.action = toolbar.addWidget(self.widget)
        self.action.setObjectName("UnravelNet_score_filter")
        self.layer: QgsVectorLayer | None = None
        iface.currentLayerChanged.connect(self._layer_changed)

    @property
    def threshold(self) -> float:
        return self.slider.value() / STEPS

    def track_layer(self, layer: QgsVectorLayer) -> None:
        """Follow a results layer and show its own current filter on the slider."""
        self.layer = layer
        value = int(round(current_threshold(layer) * STEPS))
        self.slider.blockSignals(True)
        self.slider.setValue(value)
        self.slider.blockSignals(False)
        self.label.setText(f"Score ≥ {value / STEPS:.2f}")

    def _layer_changed(self, layer) -> None:
        if results.is_result_layer(layer):
            self.track_layer(layer)

    def _changed(self, value: int) -> None:
        self.label.setText(f"Score ≥ {value / STEPS:.2f}")
        layer = self.layer
        if layer is None:
            return
        try:
            apply_threshold(layer, value / STEPS)
        except RuntimeError:  # the layer was deleted
            self.layer = None

    def remove(self) -> None:
        try:
            self.iface.currentLayerChanged.disconnect(self._layer_changed)
        except (TypeError, RuntimeError):
            pass
        self.toolbar.removeAction(self.action)
        self.widget.deleteLater()
        self.layer = None
