"""Loading and unloading the plugin in a real (headless) QGIS, and the missing-torch message."""

from __future__ import annotations

import pytest
from qgis.core import Qgis, QgsApplication, QgsSettings
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QAction, QToolBar

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


def test_missing_torch_explains_install_command(plugin, qgis_iface, no_torch_python):
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    plugin.action_detect.trigger()
    warnings = bar.get_messages(Qgis.MessageLevel.Warning)
    assert warnings, "the missing engine must be explained in the message bar"
    text = warnings[-1]
    assert "torch" in text
    assert f'"{SYSTEM_PYTHON}" -m pip install torch' in text
    assert "Traceback" not in text
    assert plugin.dialog is not None  # the dialog still opens, to pick another Python
    plugin.dialog.close()


def test_detect_in_view_with_missing_torch_only_warns(plugin, qgis_iface, no_torch_python):
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    plugin.action_view.trigger()
    assert any("pip install torch" in m for m in bar.get_messages(Qgis.MessageLevel.Warning))
    assert plugin.runner.tasks == []
