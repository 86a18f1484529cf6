""""Set up PyTorch…": the background task that makes the worker's environment, and its window.

The task runs ``torch_env.set_up`` in a QgsTask thread (progress and Cancel in QGIS's task
manager too); the window shows what will be installed and where, the live log, and the result.
Once the environment works, the plugin's interpreter cache and warm worker are reset so the next
run uses it without restarting QGIS.
"""

from __future__ import annotations

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from . import interpreter, qgis_log, runtime, settings, torch_env

SIZES = {"cpu": "about 200 MB to download, 1 GB on disk",
         "default": "up to 3 GB to download",
         }


def download_size(build: str) -> str:
    return SIZES.get(build, "about 2.5 GB to download (CUDA build), 5 GB on disk")


class TorchEnvTask(QgsTask):
    """Makes the environment in a worker thread; ``result``/``error`` are read when it ends."""

    logLine = pyqtSignal(str)  # noqa: N815 (Qt naming) queued to the main thread
    ended = pyqtSignal(object)  # the task, on the main thread

    def __init__(self, choice: torch_env.TorchChoice | None = None, with_pip: bool = True):
        super().__init__("UnravelNet: setting up PyTorch", QgsTask.Flag.CanCancel)
        self.choice = choice
        self.with_pip = with_pip
        self.result: torch_env.SetupResult | None = None
        self.error: str = ""
        self.cancelled_by_user = False
        self.chosen_python = settings.load().worker_python  # read on the main thread
        self.chosen_python_broken = False

    def run(self) -> bool:  # worker thread
        try:
            self.result = torch_env.set_up(self.logLine.emit, self.setProgress, self.isCanceled,
                                           choice=self.choice, with_pip=self.with_pip)
            if self.chosen_python:  # a Python the user chose that cannot run the engine gives way
                self.chosen_python_broken = not interpreter.probe(self.chosen_python).ok
        except torch_env.SetupCancelled:
            self.cancelled_by_user = True
            self.error = "The set-up was cancelled; nothing was changed."
        except torch_env.SetupError as exc:
            self.error = str(exc)
        except Exception as exc:  # never let a bug escape a task thread silently
            self.error = f"unexpected error: {type(exc).__name__}: {exc}"
        return self.result is not None

    def finished(self, ok: bool) -> None:  # main thread
        if ok:
            if self.chosen_python_broken:
                choices = settings.load()
                choices.worker_python = ""
                settings.save(choices)
                qgis_log.info(f"the worker Python {self.chosen_python} cannot run the engine: "
                              "the new environment replaces it")
            interpreter.clear_cache()
            runtime.shutdown()  # the next run starts the worker from the new environment
            qgis_log.info(f"PyTorch set up in {self.result.python} ({self.result.seconds:.0f} s)")
        elif not self.error:
            self.cancelled_by_user = True
            self.error = "The set-up was cancelled; nothing was changed."
        if self.error:
            qgis_log.warning(f"PyTorch set-up: {self.error}")
        self.ended.emit(self)


class TorchEnvDialog(QDialog):
    """Explains the set-up, starts it, shows its log; it can be closed while the task runs."""

    finishedSetup = pyqtSignal(bool)  # noqa: N815 True when the environment works

    def __init__(self, parent=None, choice: torch_env.TorchChoice | None = None):
        super().__init__(parent)
        self.setWindowTitle("UnravelNet – set up PyTorch")
        self.resize(720, 460)
        self.task: TorchEnvTask | None = None
        self.choice = choice or torch_env.choose_torch(torch_env.nvidia_driver_version())
        layout = QVBoxLayout(self)
        self.intro = QLabel(self._intro_text())
        self.intro.setWordWrap(True)
        layout.addWidget(self.intro)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setToolTip("Progress of the set-up (it also shows in QGIS's task manager)")
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setToolTip("What the set-up does, line by line; also saved in "
                            f"{torch_env.env_dir().parent / torch_env.LOG_NAME}")
        layout.addWidget(self.log, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.install_button = QPushButton("Install")
        self.install_button.setToolTip("Create the environment and install PyTorch now")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the set-up; the half-made environment is removed")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close this window (a running set-up goes on in the background)")
        for button in (self.install_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.install_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)

    def _intro_text(self) -> str:
        ready = torch_env.ready_python()
        text = (f"UnravelNet runs its detector with PyTorch in a separate Python. This makes a private "
                f"environment for it in<br><b>{torch_env.env_dir()}</b><br>and installs "
                f"<b>{self.choice.requirement}</b> ({self.choice.reason}; "
                f"{download_size(self.choice.build)}) with numpy, rasterio and pyproj. QGIS's own "
                "Python is not changed and no administrator rights are needed.")
        if ready:
            text += "<br><br>An environment is already set up there: installing again replaces it."
        return text

    def start(self) -> TorchEnvTask:
        self.log.clear()
        self.progress.setValue(0)
        self.status.setText("Setting up…")
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.task = TorchEnvTask(self.choice)
        self.task.logLine.connect(self.log.appendPlainText)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.ended.connect(self._ended)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Cancelling…")
            self.task.cancel()

    def _ended(self, task: TorchEnvTask) -> None:
        self.task = None
        self.install_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if task.result is not None:
            self.progress.setValue(100)
            self.status.setText(f"PyTorch {task.result.torch} is set up "
                                f"({'GPU' if task.result.cuda else 'CPU'}); you can run detections now.")
        else:
            self.status.setText(task.error)
        self.finishedSetup.emit(task.result is not None)
