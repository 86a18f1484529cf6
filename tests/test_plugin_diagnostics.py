"""The Diagnostics report: what a user pastes into a bug report."""

from __future__ import annotations

import pytest
from qgis.core import Qgis, QgsSettings
from qgis.PyQt.QtCore import qInstallMessageHandler

from qgis_unravel.plugin import diagnostics, interpreter, runtime
from qgis_unravel.plugin.worker_client import WorkerClient

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def no_torch_python():
    QgsSettings().setValue("qgis_unravel/worker_python", SYSTEM_PYTHON)
    interpreter.clear_cache()
    yield
    QgsSettings().remove("qgis_unravel/worker_python")
    interpreter.clear_cache()


def test_report_names_versions_worker_and_cache(no_torch_python):
    report = diagnostics.build_report(start_worker=False)
    assert report.startswith("## qgis-unravel diagnostics")
    assert f"QGIS: {Qgis.QGIS_VERSION}" in report
    assert "QGIS Python: 3." in report
    assert f"Worker Python: `{SYSTEM_PYTHON}`" in report
    assert f'"{SYSTEM_PYTHON}" -m pip install torch' in report
    assert "PyTorch environment (Set up PyTorch): " in report
    assert "Model cache: `" in report and "unknown" not in report.split("Model cache:")[1].splitlines()[0]
    assert "Plugin: 0." in report


def test_report_includes_last_worker_error(monkeypatch, no_torch_python):
    client = WorkerClient(SYSTEM_PYTHON)
    client.last_error = "The UnravelNet worker process was killed (signal 9)."
    client._stderr.append("RuntimeError: CUDA error: an illegal memory access")
    monkeypatch.setattr(runtime, "_client", client)
    report = diagnostics.build_report(start_worker=False)
    assert "Last worker error: The UnravelNet worker process was killed" in report
    assert "CUDA error: an illegal memory access" in report


def test_dialog_shows_the_report(no_torch_python):
    dialog = diagnostics.DiagnosticsDialog(start_worker=False)
    try:
        assert "qgis-unravel diagnostics" in dialog.text.toPlainText()
        assert dialog.text.isReadOnly()
    finally:
        dialog.deleteLater()


def test_dialog_adds_the_workers_torch_view_when_it_answers(qgis_app):
    import time
    from pathlib import Path

    from qgis.core import QgsApplication

    venv = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    if not venv.is_file():
        pytest.skip("needs the project venv (torch)")
    QgsSettings().setValue("qgis_unravel/worker_python", str(venv))
    interpreter.clear_cache()
    qt_messages: list[str] = []
    previous = qInstallMessageHandler(lambda _kind, _context, text: qt_messages.append(text))
    dialog = diagnostics.DiagnosticsDialog(start_worker=True)
    try:
        dialog.show()
        deadline = time.monotonic() + 120
        while "CUDA available" not in dialog.text.toPlainText() and time.monotonic() < deadline:
            QgsApplication.processEvents()
            time.sleep(0.05)
        text = dialog.text.toPlainText()
        assert "- torch 2." in text and "CUDA available: " in text
        # The window shows the report and its buttons (it used to open empty: its widgets were
        # made in the helper thread, "Cannot create children for a parent in a different thread").
        assert dialog.layout() is not None and dialog.layout().indexOf(dialog.text) >= 0
        assert dialog.text.isVisible() and dialog.copy_button.isVisible()
        assert not [m for m in qt_messages if "different thread" in m], qt_messages
    finally:
        qInstallMessageHandler(previous)
        dialog.deleteLater()
        QgsSettings().remove("qgis_unravel/worker_python")
        interpreter.clear_cache()


def test_gpu_section_names_driver_versions_and_free_memory():
    from qgis_unravel.plugin.diagnostics import runtime_lines

    hello = {"torch": "2.13.0+cu128", "cuda_version": "12.8", "cuda": True, "driver": "570.86.15",
             "cudnn": 90800, "devices": [{"index": 1, "name": "NVIDIA H200", "free_mb": 140000,
                                          "total_mb": 143771, "capability": "9.0"}]}
    text = "\n".join(runtime_lines(hello))
    for part in ("2.13.0+cu128", "CUDA build 12.8", "driver 570.86.15", "cuDNN 90800", "cuda:1",
                 "NVIDIA H200", "140000 MiB free of 143771 MiB", "compute capability 9.0"):
        assert part in text
    cpu = "\n".join(runtime_lines({"torch": "2.13.0+cpu", "cuda_version": None, "cuda": False}))
    assert "CPU build" in cpu and "driver" not in cpu


def test_worker_hello_reports_cuda_fields_without_a_gpu():
    from qgis_unravel.app.worker import describe_runtime

    hello = describe_runtime()
    assert hello["torch"] and "cuda_version" in hello and isinstance(hello["devices"], list)
