"""The plugin as users get it: built by ``make plugin``, unzipped into a plugins folder, and
loaded by ``qgis.utils`` the way QGIS loads plugins, in a fresh QGIS process (the test process
already imported ``qgis_unravel`` from the checkout, so the zip's copy needs its own process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LOADER = r'''
import json, os, sys
from qgis.core import QgsApplication, Qgis, QgsSettings
app = QgsApplication([], False)
app.initQgis()
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QObject, pyqtSignal
from qgis.PyQt.QtWidgets import QMainWindow, QToolBar
from qgis.PyQt import sip
import qgis.utils


class MessageBar:
    def __init__(self):
        self.messages = []

    def pushMessage(self, title, text, level=0, duration=0):
        self.messages.append((int(level), f"{title}: {text}"))

    def popWidget(self, *args):
        pass


class Iface(QObject):
    """The part of QgisInterface the plugin uses, recording menu calls."""
    currentLayerChanged = pyqtSignal(object)

    def __init__(self):
        super().__init__()
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.bar = MessageBar()
        self.menu_added, self.menu_removed = [], []

    def mainWindow(self):
        return self.window

    def mapCanvas(self):
        return self.canvas

    def messageBar(self):
        return self.bar

    def activeLayer(self):
        return None

    def addToolBar(self, name):
        return self.window.addToolBar(name)

    def addPluginToRasterMenu(self, menu, action):
        self.menu_added.append(menu)

    def removePluginRasterMenu(self, menu, action):
        self.menu_removed.append(menu)


plugins_dir = sys.argv[1]
iface = Iface()
window = iface.window
qgis.utils.iface = iface
sys.path.insert(0, plugins_dir)
qgis.utils.plugin_paths = [plugins_dir]
qgis.utils.updateAvailablePlugins()
out_available = "qgis_unravel" in qgis.utils.available_plugins
QgsSettings().setValue("qgis_unravel/worker_python", "/usr/bin/python3")  # no torch there

out = {"available": out_available}
out["loaded"] = qgis.utils.loadPlugin("qgis_unravel")
out["started"] = qgis.utils.startPlugin("qgis_unravel")
import qgis_unravel
out["module_file"] = qgis_unravel.__file__
plugin = qgis.utils.plugins["qgis_unravel"]
toolbar = plugin.toolbar
out["toolbar_actions"] = [a.text() for a in toolbar.actions()]
out["icon_ok"] = not plugin.action_detect.icon().isNull()
out["menu_calls"] = list(iface.menu_added)
registry = QgsApplication.processingRegistry()
out["provider_loaded"] = registry.providerById("unravel") is not None
plugin.action_detect.trigger()
out["warnings"] = [t for level, t in iface.bar.messages if level == int(Qgis.MessageLevel.Warning)]
if plugin.dialog is not None:
    plugin.dialog.close()
actions = list(plugin.actions)
out["unloaded"] = qgis.utils.unloadPlugin("qgis_unravel")
QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
out["provider_after"] = registry.providerById("unravel") is not None
out["toolbar_after"] = (not sip.isdeleted(toolbar)) and toolbar in window.findChildren(QToolBar)
out["actions_alive_after"] = sum(1 for a in actions if not sip.isdeleted(a))
out["menu_removed"] = len(iface.menu_removed)
out["modules_left"] = sorted(m for m in sys.modules if m.startswith("qgis_unravel.plugin"))
out["torch_imported"] = "torch" in sys.modules
print("RESULT " + json.dumps(out))
app.exitQgis()
'''


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_zip_carries_plugin_code_icons_and_worker(plugin_zip):
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert {name.split("/")[0] for name in names} == {"qgis_unravel"}
    for needed in ("qgis_unravel/metadata.txt", "qgis_unravel/__init__.py",
                   "qgis_unravel/plugin/main.py", "qgis_unravel/resources/icons/unravel.svg",
                   "qgis_unravel/app/worker.py", "qgis_unravel/worker/protocol.py"):
        assert needed in names


def test_plugin_from_zip_loads_and_unloads_cleanly(plugin_zip, tmp_path):
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(plugin_zip).extractall(plugins)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    env.pop("QGIS_UNRAVEL_PYTHON", None)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(plugins)], capture_output=True, text=True,
                          env=env, timeout=180, cwd=str(tmp_path))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["available"] and out["loaded"] and out["started"]
    assert out["module_file"].startswith(str(plugins))  # the zip's copy, not the checkout
    assert "Detect objects…" in out["toolbar_actions"] and out["icon_ok"]
    assert "&UnravelNet" in out["menu_calls"]
    assert out["provider_loaded"]
    assert any('"/usr/bin/python3" -m pip install torch' in w for w in out["warnings"]), out["warnings"]
    assert all("Traceback" not in w for w in out["warnings"])
    assert out["unloaded"]
    assert not out["provider_after"]
    assert not out["toolbar_after"]
    assert out["actions_alive_after"] == 0
    assert out["menu_removed"] == len(out["menu_calls"])
    assert out["modules_left"] == []
    assert not out["torch_imported"]
