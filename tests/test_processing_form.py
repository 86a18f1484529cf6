"""The ``unravel:detect`` form in a real (headless) QGIS: empty knobs show the chosen model's values.

Built with Processing's own dialogs (``AlgorithmDialog``, ``BatchAlgorithmDialog``,
``ModelerParametersDialog``), as the toolbox, batch mode and the Graphical Modeler build them.
"""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProcessingModelAlgorithm, QgsRasterLayer
from qgis.gui import QgsBrowserGuiModel
from qgis.PyQt.QtWidgets import QAction

from qgis_unravel.plugin.jobs import recommended_spec
from qgis_unravel.plugin.model_list import card_gsd
from qgis_unravel.plugin.processing.algorithm import run_gsd
from qgis_unravel.plugin.processing.card_widgets import CardValueWrapper
from qgis_unravel.plugin.processing.provider import UnravelProvider

DEMO = "demo-unravelnet-synthetic"
KNOBS = {"TILE": "tile_size", "OVERLAP": "overlap", "SCORE": "score_threshold", "IOU": "nms_iou"}


@pytest.fixture(scope="module")
def algorithm(qgis_processing):
    registry = QgsApplication.processingRegistry()
    if registry.providerById("unravel") is None:
        registry.addProvider(UnravelProvider())
    yield registry.algorithmById("unravel:detect")
    provider = registry.providerById("unravel")
    if provider is not None:
        registry.removeProvider(provider)


@pytest.fixture()
def form(algorithm, qgis_iface, monkeypatch):
    """The toolbox dialog's parameters panel (the mock iface lacks the browser model it asks for)."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)
    dialog = AlgorithmDialog(algorithm.create(), False, None)
    yield dialog.mainWidget()
    dialog.deleteLater()


def shown(panel, name: str) -> str:
    """What the knob's spin box displays."""
    return panel.wrappers[name].widget.text()


def press_clear_button(spin) -> None:
    """What the user's click on the spin box's clear button does."""
    actions = spin.findChildren(QAction)
    assert actions, "the spin box has no clear button"
    for action in actions:
        action.trigger()


def choose(panel, name: str, value) -> None:
    panel.wrappers[name].setParameterValue(value, panel.processing_context)


def other_model(algorithm) -> str:
    """A model of the list whose card tiles differently from the demo's."""
    demo = recommended_spec(DEMO)
    for option in algorithm.parameterDefinition("MODEL").options():
        spec = recommended_spec(option)
        if (spec.tile_size, spec.overlap) != (demo.tile_size, demo.tile_size):
            return option
    pytest.skip("no second model with other tiling in this model list")


def expected_text(model: str, field: str) -> str:
    value = getattr(recommended_spec(model), field)
    return f"model default: {value:g}" if isinstance(value, float) else f"model default: {value}"


def test_empty_knobs_show_the_chosen_models_card_values(form):
    choose(form, "MODEL", DEMO)
    for name, field in KNOBS.items():
        assert isinstance(form.wrappers[name], CardValueWrapper)
        assert form.wrappers[name].parameterValue() is None  # empty: the run takes the card's
        assert shown(form, name) == expected_text(DEMO, field)
    # The demo card's own numbers (models/demo-unravelnet-synthetic.json), as the issue states.
    assert shown(form, "TILE") == "model default: 512" and shown(form, "OVERLAP") == "model default: 128"
    assert shown(form, "BATCH") == "automatic"


def test_choosing_another_model_updates_what_the_knobs_show(form, algorithm):
    other = other_model(algorithm)
    choose(form, "MODEL", other)
    for name, field in KNOBS.items():
        assert shown(form, name) == expected_text(other, field)
        assert form.wrappers[name].parameterValue() is None
    choose(form, "MODEL", DEMO)
    assert shown(form, "TILE") == "model default: 512"


def test_an_explicit_value_wins_and_stays_when_the_model_changes(form, algorithm):
    choose(form, "MODEL", DEMO)
    form.wrappers["TILE"].widget.setValue(800)
    form.wrappers["SCORE"].widget.setValue(0.5)
    choose(form, "MODEL", other_model(algorithm))
    assert form.wrappers["TILE"].parameterValue() == 800 and shown(form, "TILE") == "800"
    assert form.wrappers["SCORE"].parameterValue() == pytest.approx(0.5)
    press_clear_button(form.wrappers["TILE"].widget)  # back to the model's value, shown
    assert form.wrappers["TILE"].parameterValue() is None
    assert shown(form, "TILE") == expected_text(other_model(algorithm), "tile_size")
    choose(form, "MODEL", DEMO)
    assert shown(form, "TILE") == "model default: 512"


def test_a_checkpoint_file_shows_the_global_defaults(form, tmp_path):
    choose(form, "MODEL", DEMO)
    choose(form, "MODEL_FILE", str(tmp_path / "mine.pth"))
    expected = recommended_spec(str(tmp_path / "mine.pth")).overlap
    assert shown(form, "OVERLAP") == f"default: {expected} (or the checkpoint's)"
    choose(form, "MODEL_FILE", "")
    assert shown(form, "OVERLAP") == "model default: 128"


def test_run_parameters_stay_empty_for_the_card(form):
    """The values a run receives: empty knobs are None, so the worker resolves the card's."""
    choose(form, "MODEL", DEMO)
    form.wrappers["OVERLAP"].widget.setValue(64)
    values = {name: form.wrappers[name].parameterValue() for name in ("TILE", "OVERLAP", "BATCH")}
    assert values == {"TILE": None, "OVERLAP": 64, "BATCH": None}


def test_batch_and_modeler_dialogs_keep_qgis_widgets(algorithm, qgis_iface, monkeypatch):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.modeler.ModelerParametersDialog import ModelerParametersDialog

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)
    batch = BatchAlgorithmDialog(algorithm.create(), None)
    row = batch.mainWidget().wrappers[0]
    assert row and not any(isinstance(w, CardValueWrapper) for w in row)
    modeler = ModelerParametersDialog(algorithm.create(), QgsProcessingModelAlgorithm("m", "g"))
    wrappers = modeler.widget.widget.wrappers
    assert type(wrappers["TILE"]).__name__ == "QgsProcessingModelerParameterWidget"
    batch.deleteLater()
    modeler.deleteLater()


def test_help_says_what_an_empty_knob_means(algorithm):
    text = algorithm.shortHelpString()
    assert "empty to use the model's own settings" in text
    spec = recommended_spec(DEMO)
    assert f"{DEMO}: tile {spec.tile_size}, overlap {spec.overlap}" in text


def test_empty_gsd_shows_the_cards_resolution_or_the_rasters_own(form, algorithm):
    choose(form, "MODEL", DEMO)
    assert shown(form, "GSD") == "model default: 0.15 m/px"  # the demo card's 0.15 m
    without = [m for m in algorithm.parameterDefinition("MODEL").options() if card_gsd(m) is None]
    if without:
        choose(form, "MODEL", without[0])
        assert shown(form, "GSD") == "the raster's own"
    choose(form, "MODEL", DEMO)
    assert shown(form, "GSD") == "model default: 0.15 m/px"


def _utm_raster(tmp_path, pixel: float) -> QgsRasterLayer:
    """A small EPSG:32631 GeoTIFF with ``pixel`` metres per pixel, opened as QGIS opens it."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / f"utm_{pixel:g}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(500000, 5000000, pixel, pixel)) as dst:
        dst.write(np.zeros((3, 64, 64), dtype=np.uint8))
    layer = QgsRasterLayer(str(path), path.stem)
    assert layer.isValid()
    return layer


def test_run_gsd_follows_the_card_unless_set(qgis_processing, tmp_path):
    coarse, native = _utm_raster(tmp_path, 0.3), _utm_raster(tmp_path, 0.15)
    assert run_gsd(None, DEMO, coarse) == 0.15  # empty: the card's resolution, resampled
    assert run_gsd(None, DEMO, native) is None  # already at it: the raster's own pixels
    assert run_gsd(0.0, DEMO, coarse) is None  # 0: the raster's own, whatever the card
    assert run_gsd(0.5, DEMO, coarse) == 0.5  # an explicit value wins
    assert run_gsd(None, str(tmp_path / "own.pth"), coarse) is None  # a checkpoint file: no card
