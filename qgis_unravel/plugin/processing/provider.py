"""The "UnravelNet" Processing provider (id ``unravel``)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ... import paths


class UnravelProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "unravel"

    def name(self) -> str:
        return "UnravelNet"

    def longName(self) -> str:  # noqa: N802 (QGIS name)
        return "UnravelNet oriented object detection"

    def icon(self) -> QIcon:
        return QIcon(str(paths.resources_dir() / "icons" / "unravel.svg"))

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS name)
        from .algorithm import DetectAlgorithm
        from .evaluate_algorithm import EvaluateAlgorithm
        from .train_algorithm import TrainAlgorithm

        self.addAlgorithm(DetectAlgorithm())
        self.addAlgorithm(TrainAlgorithm())
        self.addAlgorithm(EvaluateAlgorithm())
