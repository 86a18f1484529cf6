"""Processing algorithm ``unravel:evaluate``: a detection layer against a labelled layer on a
raster's pixel grid: per-class AP (DOTA-style, rotated IoU, VOC07 11-point or area), an HTML
table and the precision-recall plot. The comparison runs in a worker process (``app/qgis_job.py``).
"""

from __future__ import annotations

import html

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ... import paths
from ..job_runner import JobError, run_job
from .layers import raster_file, remove_files, vector_file
from .train_algorithm import report

POLYGONS = QgsProcessing.SourceType.TypeVectorPolygon
AP_MODES = ["11points", "area"]


def ap_table_html(evaluation: dict) -> str:
    """The per-class table of an evaluation as a small HTML page."""
    rows = "".join(
        f"<tr><td>{html.escape(str(c['class']))}</td><td>{c['gts']}</td><td>{c['dets']}</td>"
        f"<td>{c['recall']:.3f}</td><td>{c['ap']:.3f}</td></tr>"
        for c in evaluation["classes"]
    )
    return (
        "<html><body><h3>Average precision</h3><table border='1' cellpadding='4'>"
        "<tr><th>class</th><th>objects</th><th>detections</th><th>recall</th><th>AP</th></tr>"
        f"{rows}<tr><th>mAP</th><td></td><td></td><td></td><th>{evaluation['mAP']:.3f}</th></tr>"
        f"</table><p>rotated IoU &ge; {evaluation['iou_thr']:g}, AP mode {html.escape(evaluation['mode'])}"
        "</p></body></html>"
    )


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    DETECTIONS, DET_CLASS_FIELD, SCORE_FIELD = "DETECTIONS", "DET_CLASS_FIELD", "SCORE_FIELD"
    LABELS, CLASS_FIELD, RASTER, IOU, AP_MODE = "LABELS", "CLASS_FIELD", "RASTER", "IOU", "AP_MODE"
    TABLE, PLOT, MAP = "TABLE", "PLOT", "MAP"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate detections"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Scores a detection layer (as 'Detect oriented objects' writes it: class and score "
                "fields) against a labelled polygon layer, on the pixel grid of RASTER: per class, "
                "detections sorted by score are matched to objects by rotated IoU (mmrotate's DOTA "
                "rule); AP is the VOC07 11-point value or the area under the curve. Outputs: the mAP, "
                "an HTML table and the precision-recall plot (PNG).")

    def icon(self) -> QIcon:
        return QIcon(str(paths.resources_dir() / "icons" / "unravel.svg"))

    def createInstance(self):  # noqa: N802
        return EvaluateAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterVectorLayer(self.DETECTIONS, "Detections", [POLYGONS]))
        self.addParameter(QgsProcessingParameterField(
            self.DET_CLASS_FIELD, "Class field of the detections", "class_name", self.DETECTIONS,
            optional=True))  # optional: QGIS 3.22 rejects a field left at its default otherwise
        self.addParameter(QgsProcessingParameterField(
            self.SCORE_FIELD, "Score field of the detections", "score", self.DETECTIONS,
            QgsProcessingParameterField.DataType.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(self.LABELS, "Labelled objects", [POLYGONS]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field of the labels", "class", self.LABELS, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.RASTER, "Raster (pixel grid)"))
        self.addParameter(number(self.IOU, "Rotated IoU threshold", number.Type.Double, 0.5, False, 0.01, 1))
        self.addParameter(QgsProcessingParameterEnum(self.AP_MODE, "AP mode", AP_MODES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.TABLE, "AP table", "HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.PLOT, "Precision-recall plot", "PNG files (*.png)", optional=True))
        self.addOutput(QgsProcessingOutputNumber(self.MAP, "mAP"))

    def _field(self, parameters, name: str, context) -> str:
        """A field name, or the parameter's default when left empty."""
        value = self.parameterAsString(parameters, name, context)
        return value or self.parameterDefinition(name).defaultValue()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        cleanup: list = []
        try:
            dets, _ = vector_file(self.parameterAsVectorLayer(parameters, self.DETECTIONS, context),
                                  "detections", cleanup)
            labels, label_layer = vector_file(self.parameterAsVectorLayer(parameters, self.LABELS, context),
                                              "labels", cleanup)
            args = ["--raster", raster_file(self.parameterAsRasterLayer(parameters, self.RASTER, context)),
                    "--labels", labels, "--detections", dets,
                    "--class-field", self._field(parameters, self.CLASS_FIELD, context),
                    "--det-class-field", self._field(parameters, self.DET_CLASS_FIELD, context),
                    "--score-field", self._field(parameters, self.SCORE_FIELD, context),
                    "--iou", repr(self.parameterAsDouble(parameters, self.IOU, context)),
                    "--ap-mode", AP_MODES[self.parameterAsEnum(parameters, self.AP_MODE, context)]]
            if label_layer:
                args += ["--layer", label_layer]
            plot = self.parameterAsFileOutput(parameters, self.PLOT, context)
            if plot:
                args += ["--plot", plot]
            result = run_job("evaluate", args, report(feedback), feedback.isCanceled)
        except JobError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            remove_files(cleanup)
        evaluation = result.get("evaluation") or {}
        if "mAP" not in evaluation:
            raise QgsProcessingException("the evaluation job returned no numbers")
        table = self.parameterAsFileOutput(parameters, self.TABLE, context)
        with open(table, "w", encoding="utf-8") as fh:
            fh.write(ap_table_html(evaluation))
        feedback.pushInfo(f"mAP = {evaluation['mAP']:.4f}")
        return {self.MAP: evaluation["mAP"], self.TABLE: table, self.PLOT: plot or None}
