"""Processing form: the run knobs show the chosen model's own values while they are empty.

An empty TILE, OVERLAP, BATCH, SCORE or IOU means "the model card's value", resolved by the
worker; an empty GSD means the card's processing resolution (0: the raster's own pixels), as the
plugin's dialog preselects it. In the algorithm's dialog these knobs are spin boxes whose empty state reads
"model default: 512" (the card of the model chosen above, followed as the choice changes), the
same values the plugin's own dialog shows. Only that dialog changes: in batch mode and in the
Graphical Modeler the wrapper steps aside for QGIS's own widget, and the parameters themselves
(empty = the card's value, an explicit value wins) are untouched, so ``qgis_process`` and models
behave as before. Card values come from the card files (``plugin.jobs.recommended_spec``): no
torch here.

Attached through the parameter metadata ``{"widget_wrapper": {"class": ..., "field": ...}}``
(``algorithm.card_value_widget``), which QGIS 3.22's Processing GUI reads
(``processing.gui.wrappers.WidgetWrapperFactory``) when it builds a form; nothing imports this
module otherwise, so ``qgis_process`` never loads the Processing GUI for it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from processing.gui.wrappers import WidgetWrapper, dialogTypes
from qgis.core import QgsProcessingParameterNumber
from qgis.gui import QgsDoubleSpinBox, QgsGui, QgsProcessingGui, QgsSpinBox

from ..jobs import recommended_spec
from ..model_list import card_gsd

#: The parameters whose choice of model the knobs follow: a checkpoint file wins over the model.
MODEL, MODEL_FILE = "MODEL", "MODEL_FILE"
#: The knob whose model value comes from the card's ground resolution (``model_list.card_gsd``).
GSD_FIELD = "gsd"


def model_value_text(model: str, field: str) -> str:
    """What an empty knob means for ``model``: "model default: 512", "automatic", or for the
    processing resolution (``gsd``, set by the card, not by the worker) "the raster's own"."""
    if field == GSD_FIELD:
        value = card_gsd(model)
        return "the raster's own" if value is None else f"model default: {value:g} m/px"
    value = getattr(recommended_spec(model), field)
    if value is None:
        return "automatic"
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if model and (os.sep in model or model.endswith((".pth", ".pt"))):
        return f"default: {shown} (or the checkpoint's)"  # a file: its own settings, if stored
    return f"model default: {shown}"


def qgis_default_wrapper(param, dialog, row: int = 0, col: int = 0):
    """The wrapper QGIS makes for ``param`` without our metadata (batch and modeler dialogs)."""
    registry = QgsGui.processingGuiRegistry()
    if dialog.__class__.__name__ == "ModelerParametersDialog":
        return registry.createModelerParameterWidget(dialog.model, dialog.childId, param, dialog.context)
    kind = dialogTypes.get(dialog.__class__.__name__, QgsProcessingGui.Standard)
    wrapper = registry.createParameterWidgetWrapper(param, kind)
    if wrapper is not None:
        wrapper.setDialog(dialog)
    return wrapper


class _ShowsEmptyState:
    """Clearing (the clear button) returns to the empty state *showing* its text: QgsSpinBox's own
    clear blanks the line edit, which would hide the model's value."""

    def clear(self) -> None:
        self.setValue(self.clearValue())


class CardSpinBox(_ShowsEmptyState, QgsSpinBox):
    """Integer knob."""


class CardDoubleSpinBox(_ShowsEmptyState, QgsDoubleSpinBox):
    """Decimal knob."""


class CardValueWrapper(WidgetWrapper):
    """An optional number whose empty state shows the chosen model's value for it."""

    def __new__(cls, param, dialog, row: int = 0, col: int = 0, **kwargs: Any):
        if dialogTypes.get(dialog.__class__.__name__, QgsProcessingGui.Standard) != QgsProcessingGui.Standard:
            return qgis_default_wrapper(param, dialog, row, col)
        return super().__new__(cls)

    def __init__(self, param, dialog, row: int = 0, col: int = 0, field: str = "") -> None:
        self.field = field
        self._model_wrappers: dict = {}
        super().__init__(param, dialog, row, col)

    # -- the widget ---------------------------------------------------------------------------
    def createWidget(self, **_kwargs: Any):  # noqa: N802 (QGIS name)
        """A spin box whose minimum, one step below the parameter's, is the empty state."""
        definition = self.parameterDefinition()
        integer = definition.dataType() == QgsProcessingParameterNumber.Type.Integer
        if integer:
            spin = CardSpinBox()
            low, high = int(definition.minimum()) - 1, int(definition.maximum())
        else:
            spin = CardDoubleSpinBox()
            spin.setDecimals(3 if self.field == GSD_FIELD else 2)
            spin.setSingleStep(0.05)
            low, high = definition.minimum() - 0.05, definition.maximum()
        spin.setRange(low, high)
        spin.setClearValue(low)
        spin.setShowClearButton(True)
        spin.setSpecialValueText("Not set")
        spin.setValue(low)
        spin.valueChanged.connect(lambda *_: self.widgetValueHasChanged.emit(self))
        return spin

    def setValue(self, value) -> None:  # noqa: N802 (QGIS name)
        if value is None or value == "":
            self.widget.clear()  # the empty state
        else:
            self.widget.setValue(float(value) if isinstance(self.widget, CardDoubleSpinBox) else int(value))

    def value(self) -> Optional[float]:
        """None while empty (the model's value applies), else the number."""
        if self.widget.value() == self.widget.minimum():
            return None
        return self.widget.value()

    # -- following the model ------------------------------------------------------------------
    def postInitialize(self, wrappers) -> None:  # noqa: N802 (QGIS name)
        """Follow the model and checkpoint-file choices of the same form."""
        for wrapper in wrappers:
            name = wrapper.parameterDefinition().name()
            if name in (MODEL, MODEL_FILE):
                self._model_wrappers[name] = wrapper
                wrapper.widgetValueHasChanged.connect(self.show_model_value)
        self.show_model_value()

    def chosen_model(self) -> str:
        """The checkpoint file when one is given, else the chosen model (what the run uses)."""
        values = {name: wrapper.parameterValue() for name, wrapper in self._model_wrappers.items()}
        path = str(values.get(MODEL_FILE) or "").strip()
        return path or str(values.get(MODEL) or "").strip()

    def show_model_value(self, *_args: Any) -> None:
        """Write the chosen model's value into the empty state (and the tooltip)."""
        text = model_value_text(self.chosen_model(), self.field)
        self.widget.setSpecialValueText(text)
        self.widget.setToolTip(f"Empty: {text}")
