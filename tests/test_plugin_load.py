"""Loading and unloading the plugin in a real (headless) QGIS, and the missing-torch message."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QAction, QPushButton, QToolBar
from rasterio.transform import from_origin

import qgis_unravel
from qgis_unravel.plugin import interpreter, runtime

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's Python: QGIS bindings, no torch


@pytest.fixture
def plugin(qgis_iface):
    qgis_iface.addPluginToRasterMenu.reset_mock()
    qgis_iface.removePluginRasterMenu.reset_mock()
    instance = qgis_unravel.classFactory(qgis_iface)
    instance.initGui()
    yield instance
    if instance.actions:
        instance.unload()


@pytest.fixture
def no_torch_python():
    settings = QgsSettings()
    settings.setValue("qgis_unravel/worker_python", SYSTEM_PYTHON)
    interpreter.clear_cache()
    yield SYSTEM_PYTHON
    settings.remove("qgis_unravel/worker_python")
    interpreter.clear_cache()


def registry():
    return QgsApplication.processingRegistry()


def test_init_gui_adds_toolbar_actions_with_icons(plugin):
    toolbar = plugin.toolbar
    assert isinstance(toolbar, QToolBar)
    texts = [action.text() for action in toolbar.actions()]
    assert "Detect objects…" in texts and "Detect in view" in texts
    assert not plugin.action_detect.icon().isNull()


def test_init_gui_adds_raster_menu_entries(plugin, qgis_iface):
    added = [call.args for call in qgis_iface.addPluginToRasterMenu.call_args_list]
    assert ("&UnravelNet", plugin.action_detect) in added
    assert ("&UnravelNet", plugin.action_diagnostics) in added
    assert ("&UnravelNet", plugin.action_setup) in added


def test_init_gui_registers_processing_provider(plugin):
    provider = registry().providerById("unravel")
    assert provider is not None and provider.name() == "UnravelNet"
    algorithm = registry().algorithmById("unravel:detect")
    assert algorithm is not None and algorithm.displayName() == "Detect oriented objects"


def test_unload_leaves_nothing_behind(plugin, qgis_iface):
    actions = list(plugin.actions)
    toolbar = plugin.toolbar
    main_window = qgis_iface.mainWindow()
    plugin.unload()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    removed = [call.args[1] for call in qgis_iface.removePluginRasterMenu.call_args_list]
    assert all(action in removed for action in actions)
    assert registry().providerById("unravel") is None
    assert registry().algorithmById("unravel:detect") is None
    assert sip.isdeleted(toolbar) or toolbar not in main_window.findChildren(QToolBar)
    leftovers = [a for a in main_window.findChildren(QAction) if a.objectName().startswith("UnravelNet")]
    assert leftovers == []
    assert runtime.current_client() is None


def wait_for_probe(plugin, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while plugin.engine_check.busy() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    QgsApplication.processEvents()
    assert not plugin.engine_check.busy()


def setup_buttons(qgis_iface) -> list:
    return [b for b in qgis_iface.messageBar().findChildren(QPushButton) if b.text() == "Set up PyTorch…"]


def test_missing_torch_offers_the_setup_button_without_freezing(plugin, qgis_iface, no_torch_python):
    plugin.action_detect.trigger()
    # The dialog is up at once; the worker's Python is probed in a helper thread (it used to
    # freeze QGIS for seconds on the main thread).
    assert plugin.dialog is not None and plugin.dialog.isVisible()
    assert plugin.engine_check.busy()
    assert "Checking" in plugin.dialog.status.text()
    wait_for_probe(plugin)
    level, text = plugin.notifier.last
    assert level == int(Qgis.MessageLevel.Warning)
    assert "Set up PyTorch" in text and "Traceback" not in text
    assert "pip" not in text and "--" not in text  # written for a QGIS user, not a shell
    assert "Set up PyTorch" in plugin.dialog.status.text()
    [button] = setup_buttons(qgis_iface)
    button.click()
    assert plugin.setup_dialog is not None and plugin.setup_dialog.isVisible()
    assert "private environment" in plugin.setup_dialog.intro.text()
    plugin.setup_dialog.close()
    plugin.dialog.close()


def test_detect_in_view_with_missing_torch_only_warns(plugin, qgis_iface, no_torch_python, tmp_path,
                                                      qgis_new_project):
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 1, 1)) as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    layer = QgsRasterLayer(str(path), "r", "gdal")
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    plugin.action_view.trigger()
    assert plugin.engine_check.busy()  # not probed on the main thread
    wait_for_probe(plugin)
    assert "Set up PyTorch" in plugin.notifier.last[1]
    assert plugin.runner.tasks == []


def test_messages_replace_each_other_instead_of_piling_up(plugin, qgis_iface):
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    for number in range(5):
        plugin.message(f"warning {number}", Qgis.MessageLevel.Warning, 0)
    plugin.message("12 objects found", Qgis.MessageLevel.Success)
    assert len(bar.items()) == 1  # the success is what the user sees, not "5 more"
    assert bar.currentItem().text() == "12 objects found"
