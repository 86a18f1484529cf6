"""A short Markdown report for bug reports: versions, GPUs, the worker and its last error."""

from __future__ import annotations

import platform
import sys
import threading

from qgis.core import Qgis
from qgis.PyQt.QtCore import QT_VERSION_STR, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from .. import paths
from . import runtime
from .worker_client import WorkerError


def plugin_version() -> str:
    return paths.version()


def model_cache_line() -> str:
    try:
        from ..zoo import cache_root

        return str(cache_root())
    except Exception as exc:  # the zoo must never break the report
        return f"unknown ({type(exc).__name__}: {exc})"


def worker_section(start_worker: bool = True) -> list[str]:
    """The worker interpreter, what it can import, and (started if asked) its torch/GPU view."""
    probe = runtime.worker_python()
    lines = [f"- Worker Python: `{probe.python}`"]
    if probe.versions:
        lines.append("- Worker packages: " + ", ".join(f"{k} {v}" for k, v in sorted(probe.versions.items())))
    if not probe.ok:
        lines.append(f"- Worker problem: {probe.explain()}")
        if probe.install_command():
            lines.append(f"- Manual fix (README): `{probe.install_command()}`")
        return lines
    hello = None
    client = runtime.current_client()
    if start_worker:
        try:
            client = runtime.client()
            hello = client.start(timeout_s=60)
        except WorkerError as exc:
            lines.append(f"- Worker start failed: {exc}")
    if hello:
        lines += runtime_lines(hello)
    return lines


def runtime_lines(hello: dict) -> list[str]:
    """The worker's torch, CUDA build, NVIDIA driver, cuDNN and each GPU with its free memory."""
    lines = [f"- torch {hello.get('torch')}, CUDA build {hello.get('cuda_version') or 'none (CPU build)'}, "
             f"CUDA available: {'yes' if hello.get('cuda') else 'no'}"]
    if hello.get("cuda"):
        lines.append(f"- NVIDIA driver {hello.get('driver') or 'unknown'}, "
                     f"cuDNN {hello.get('cudnn') or 'unknown'}")
    for device in hello.get("devices", []):
        total = f" of {device['total_mb']} MiB" if device.get("total_mb") else ""
        capability = f", compute capability {device['capability']}" if device.get("capability") else ""
        lines.append(f"  - GPU {device['index']} (cuda:{device['index']}): {device['name']}, "
                     f"{device['free_mb']} MiB free{total}{capability}")
    if hello.get("cuda_error"):
        lines.append(f"- CUDA error: {hello['cuda_error']}")
    return lines


def torch_env_line() -> str:
    from . import env_location

    marker = env_location.read_marker()
    where = f"`{env_location.env_dir()}`"
    if not marker:
        return f"not set up ({where})"
    return (f"{where}, torch {marker.get('torch')} ({marker.get('build')}), made {marker.get('created')} "
            f"by plugin {marker.get('plugin_version')}")


def last_error_section() -> list[str]:
    client = runtime.current_client()
    if client is None or not (client.last_error or client.stderr_tail()):
        return ["- Last worker error: none"]
    lines = [f"- Last worker error: {client.last_error or 'none'}"]
    tail = client.stderr_tail(12)
    if tail:
        lines += ["", "Worker stderr (last lines):", "", "```", tail, "```"]
    return lines


def build_report(start_worker: bool = True) -> str:
    lines = [
        "## qgis-unravel diagnostics", "",
        f"- Plugin: {plugin_version()} at `{paths.PACKAGE_DIR}`",
        f"- QGIS: {Qgis.QGIS_VERSION}, Qt {QT_VERSION_STR}",
        f"- QGIS Python: {sys.version.split()[0]} (`{sys.executable}`)",
        f"- OS: {platform.platform()}",
    ]
    lines += worker_section(start_worker)
    lines.append(f"- Model cache: `{model_cache_line()}`")
    lines.append(f"- PyTorch environment (Set up PyTorch): {torch_env_line()}")
    lines += last_error_section()
    return "\n".join(lines) + "\n"


class DiagnosticsDialog(QDialog):
    """Shows the report with Copy and Save buttons.

    Every widget is made here, on the main thread. The report without the worker's GPU view
    appears at once; the worker (which imports torch, seconds) is asked in a helper thread, which
    only emits the finished text: Qt widgets are never touched from that thread.
    """

    reportReady = pyqtSignal(str)  # noqa: N815 (Qt naming)

    def __init__(self, parent=None, start_worker: bool = True):
        super().__init__(parent)
        self.setWindowTitle("UnravelNet diagnostics")
        self.resize(640, 420)
        self.text = QPlainTextEdit(build_report(start_worker=False))
        self.text.setReadOnly(True)
        self.text.setToolTip("Paste this report into a bug report")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the report to the clipboard")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the report as a Markdown file")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.save_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(lambda: QApplication.clipboard().setText(self.text.toPlainText()))
        self.save_button.clicked.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        self.reportReady.connect(self.text.setPlainText)
        self.worker_asked = False
        if start_worker:
            self.worker_asked = True
            threading.Thread(target=self._full_report, daemon=True).start()

    def _full_report(self) -> None:  # helper thread: no widget access here
        report = build_report(start_worker=runtime.worker_python().ok)
        try:
            self.reportReady.emit(report)
        except RuntimeError:  # the dialog was closed and deleted meanwhile
            pass

    def save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save diagnostics", "unravel-diagnostics.md",
                                              "Markdown (*.md)")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(self.text.toPlainText())
