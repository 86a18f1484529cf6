"""Processing algorithm ``unravel:train``: train (or fine-tune) a detector on raster layers with a
labelled polygon layer, or on a DOTA-format folder, in a worker process (``app/qgis_job.py``).

Progress follows the iterations; Cancel stops after the current one and leaves a checkpoint:
run again with "Resume" ticked and the same output folder to continue exactly where it stopped.
"""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from ... import paths
from ..job_runner import JobError, run_job
from .layers import raster_file, remove_files, vector_file

DEVICES = ["cpu", "cuda"]
POLYGONS = QgsProcessing.SourceType.TypeVectorPolygon


def report(feedback):
    """An event sink that shows a job's progress and log lines in the Processing log."""

    def on_event(message: dict) -> None:
        if message.get("type") == "progress" and message.get("total"):
            feedback.setProgress(100.0 * message["done"] / message["total"])
            if message["done"] % 20 == 0 or message["done"] == message["total"]:
                stage = message.get("stage", "")
                feedback.pushInfo(f"iteration {message['done']}/{message['total']}: {stage}")
        elif message.get("type") in ("warning", "log"):
            feedback.pushInfo(str(message.get("message")))

    return on_event


class TrainAlgorithm(QgsProcessingAlgorithm):
    RASTERS, LABELS, CLASS_FIELD, CLASSES, DOTA = "RASTERS", "LABELS", "CLASS_FIELD", "CLASSES", "DOTA"
    PRESET, FROM_CHECKPOINT, ITERATIONS, BATCH, LR = "PRESET", "FROM_CHECKPOINT", "ITERATIONS", "BATCH", "LR"
    TILE, OVERLAP, DEVICE, SEED, RESUME = "TILE", "OVERLAP", "DEVICE", "SEED", "RESUME"
    ACCEPT = "ACCEPT_LICENSE"
    OUTPUT, CHECKPOINT = "OUTPUT", "CHECKPOINT"

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802
        return "Train detector"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Trains an UnravelNet (or LEGNet) Oriented R-CNN on raster layers with a polygon layer "
                "whose CLASS_FIELD names each object's class, or on a DOTA-format folder (images/ with "
                "labelTxt/ or annfiles/). PRESET is a fresh architecture (tiny, small, nano, pico) or a "
                "published recipe (unravelnet-t-dota10, unravelnet-s-dota10, legnet-t-dota10, "
                "legnet-s-dota10: DOTA data, ImageNet backbone downloaded on first use, 36 epochs). "
                "Checkpoints (mmrotate format) go to the output folder; Cancel keeps a checkpoint and "
                "RESUME continues from it. Runs in a separate Python process with PyTorch.")

    def icon(self) -> QIcon:
        return QIcon(str(paths.resources_dir() / "icons" / "unravel.svg"))

    def createInstance(self):  # noqa: N802
        return TrainAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        number = QgsProcessingParameterNumber
        integer, double = number.Type.Integer, number.Type.Double
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.RASTERS, "Training rasters", QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.LABELS, "Labelled polygons (one layer for all rasters)", [POLYGONS], optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field", "class", self.LABELS, optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.CLASSES, "Classes in model order (comma-separated; empty: all found, or DOTA's)",
            optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.DOTA, "Or: DOTA-format folder", QgsProcessingParameterFile.Behavior.Folder, optional=True))
        self.addParameter(QgsProcessingParameterString(self.PRESET, "Preset or recipe", "tiny"))
        self.addParameter(QgsProcessingParameterFile(
            self.FROM_CHECKPOINT, "Start from a detector checkpoint (fine-tune)", optional=True))
        self.addParameter(number(self.ITERATIONS, "Iterations (0: the recipe's)", integer, 1000, False, 0))
        self.addParameter(number(self.BATCH, "Images per batch", integer, 2, False, 1, 256))
        self.addParameter(number(self.LR, "Learning rate (0: the preset's)", double, 0.0, False, 0.0, 1.0))
        self.addParameter(number(self.TILE, "Chip size for rasters (pixels)", integer, 256, False, 64, 4096))
        self.addParameter(number(self.OVERLAP, "Chip overlap (pixels)", integer, 64, False, 0, 2048))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addParameter(number(self.SEED, "Random seed", integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterBoolean(self.RESUME, "Resume from the output folder", False))
        self.addParameter(QgsProcessingParameterBoolean(
            self.ACCEPT, "Accept the licence of downloaded backbone weights (recipes)", False))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Output folder"))
        self.addOutput(QgsProcessingOutputFile(self.CHECKPOINT, "Checkpoint"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        cleanup: list = []
        try:
            args = self._args(parameters, context, cleanup)
            feedback.pushInfo("qgis-unravel train " + " ".join(args))
            result = run_job("train", args, report(feedback), feedback.isCanceled)
        except JobError as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            remove_files(cleanup)
        if result.get("partial"):
            feedback.pushWarning(
                f"Stopped at iteration {result.get('iteration')}: tick Resume to continue from there.")
        return {self.OUTPUT: self.parameterAsString(parameters, self.OUTPUT, context),
                self.CHECKPOINT: result.get("output")}

    def _args(self, parameters, context, cleanup: list) -> list[str]:
        """The ``train`` command line for these parameters (checked before the job starts)."""
        out = self.parameterAsString(parameters, self.OUTPUT, context)
        args = ["--out", out, "--no-progress",
                "--preset", (self.parameterAsString(parameters, self.PRESET, context) or "tiny").strip(),
                "--batch-size", str(self.parameterAsInt(parameters, self.BATCH, context)),
                "--device", DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                "--seed", str(self.parameterAsInt(parameters, self.SEED, context))]
        iterations = self.parameterAsInt(parameters, self.ITERATIONS, context)
        if iterations > 0:
            args += ["--iterations", str(iterations), "--checkpoint-every", str(max(1, min(500, iterations)))]
        lr = self.parameterAsDouble(parameters, self.LR, context)
        if lr > 0:
            args += ["--lr", repr(lr)]
        classes = (self.parameterAsString(parameters, self.CLASSES, context) or "").strip()
        if classes:
            args += ["--classes", classes]
        checkpoint = self.parameterAsString(parameters, self.FROM_CHECKPOINT, context)
        if checkpoint:
            args += ["--from-checkpoint", checkpoint]
        if self.parameterAsBool(parameters, self.RESUME, context):
            args.append("--resume")
        if self.parameterAsBool(parameters, self.ACCEPT, context):
            args.append("--yes")
        dota = self.parameterAsString(parameters, self.DOTA, context)
        rasters = self.parameterAsLayerList(parameters, self.RASTERS, context)
        labels = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        if dota and (rasters or labels):
            raise QgsProcessingException("give either a DOTA folder or rasters with labels, not both")
        if dota:
            return args + ["--dota", dota]
        if not rasters or labels is None:
            raise QgsProcessingException(
                "no training data: choose raster layers and the labelled polygon layer, or a DOTA folder")
        path, layer_name = vector_file(labels, "labels", cleanup)
        args += ["--raster", *[raster_file(r) for r in rasters], "--labels", path,
                 "--class-field", self.parameterAsString(parameters, self.CLASS_FIELD, context) or "class",
                 "--tile-size", str(self.parameterAsInt(parameters, self.TILE, context)),
                 "--overlap", str(self.parameterAsInt(parameters, self.OVERLAP, context))]
        if layer_name:
            args += ["--layer", layer_name]
        return args
