"""Run inside the QGIS desktop (``qgis --code``) by scripts/screenshot.sh: open the example scene,
run the plugin's dialog with the demo model, wait for the detection layer, grab the screen, quit.

Environment: SHOT_OUT (PNG to write), SHOT_RASTER (GeoTIFF to open), SHOT_PYTHON (the worker's
Python), SHOT_MODE ("detect", or "setup": press Raster > UnravelNet > Set up PyTorch… > Install
and grab the window when the environment is made).
"""

import os

import qgis.utils
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtGui import QGuiApplication
from qgis.PyQt.QtWidgets import QDockWidget

OUT = os.environ["SHOT_OUT"]
SETTINGS = {
    "model": "demo-unravelnet-synthetic",
    "device": "cpu",
    "tile": 512,
    "overlap": 128,
    "batch": 2,
    "score": 0.3,
    "iou": 0.1,
    "labels": False,
    "output_mode": "temporary",
    "extent_mode": "layer",
    "worker_python": os.environ.get("SHOT_PYTHON", ""),
}
MODE = os.environ.get("SHOT_MODE", "detect")
for key, value in SETTINGS.items():
    QgsSettings().setValue("qgis_unravel/" + key, value)

layer = QgsRasterLayer(os.environ["SHOT_RASTER"], "example scene", "gdal")
QgsProject.instance().addMapLayer(layer)
keep = {}


def shoot() -> None:
    QGuiApplication.primaryScreen().grabWindow(0).save(OUT)
    print("SHOT saved", OUT, flush=True)
    QgsProject.instance().clear()  # QGIS 3.22 can crash on exit with layers still loaded
    QgsApplication.exit(0)


def ended(task) -> None:
    qgis.utils.iface.mapCanvas().refreshAllLayers()
    print("TASK ended", task.result and task.result.get("count"), task.error, flush=True)
    QTimer.singleShot(3000, shoot)


def start() -> None:
    window = qgis.utils.iface.mainWindow()
    window.setGeometry(0, 0, 1600, 1000)
    for dock in window.findChildren(QDockWidget):
        if dock.objectName() == "Browser":
            dock.hide()
    # the scene's top-left corner at the canvas's, 1.25 scene pixels per screen pixel; the dialog
    # covers the right half
    extent, canvas = layer.extent(), qgis.utils.iface.mapCanvas()
    per_px = 1.25 * layer.rasterUnitsPerPixelX()
    width, height = canvas.width() * per_px, canvas.height() * per_px
    left, top = extent.xMinimum(), extent.yMaximum()
    canvas.setExtent(QgsRectangle(left, top - height, left + width, top))
    plugin = qgis.utils.plugins["qgis_unravel"]
    if MODE == "setup":
        plugin.show_setup()
        setup = plugin.setup_dialog
        setup.move(1600 - setup.width() - 40, 120)
        setup.start().ended.connect(lambda task: (print("TASK ended", task.result, task.error, flush=True),
                                                  QTimer.singleShot(2000, shoot)))
        keep["dialog"] = setup
        return
    plugin.show_dialog()
    dialog = plugin.dialog
    dialog.move(1600 - dialog.width() - 8, 60)
    dialog.run()
    dialog.task.ended.connect(ended)
    keep["dialog"] = dialog


QTimer.singleShot(4000, start)
QTimer.singleShot(900000, shoot)  # never hang (a loaded 2-core machine is slow)
