"""Messages to the QGIS log panel, tab "UnravelNet" (thread-safe, so workers may call it)."""

from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

TAB = "UnravelNet"


def info(message: str) -> None:
    QgsMessageLog.logMessage(message, TAB, Qgis.MessageLevel.Info)


def warning(message: str) -> None:
    QgsMessageLog.logMessage(message, TAB, Qgis.MessageLevel.Warning)


def critical(message: str) -> None:
    QgsMessageLog.logMessage(message, TAB, Qgis.MessageLevel.Critical)
