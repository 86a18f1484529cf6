""""Set up PyTorch": the torch build chosen for a machine, and the real environment made from
scratch in headless QGIS by the background task (slow: it installs torch from this machine's
package index; CI runs it)."""

from __future__ import annotations

import json
import sys
import time

import pytest
from qgis.core import QgsApplication, QgsSettings

from qgis_unravel import paths
from qgis_unravel.plugin import interpreter, settings, torch_env
from qgis_unravel.plugin.torch_env_task import TorchEnvDialog, TorchEnvTask
from qgis_unravel.plugin.worker_client import WorkerClient

# The release on this machine's disk (a CPU wheel); elsewhere a user gets the newest.
LOCAL_TORCH = "torch==2.13.0"


@pytest.mark.parametrize("driver, build", [
    (None, "cpu"), ("390.157", "cpu"), ("470.256.02", "cu118"), ("535.183.01", "cu126"),
    ("570.86.15", "cu128"), ("580.65.06", "cu130"), ("garbage", None),
])
def test_cuda_build_follows_the_driver(driver, build):
    choice = torch_env.choose_torch(driver, platform="linux", environ={})
    if build is None:  # an unreadable version is treated as no usable driver
        assert choice.build == "cpu"
        return
    assert choice.build == build
    assert choice.index_url == torch_env.PYTORCH_INDEX + build
    assert choice.pip_args() == [torch_env.DEFAULT_TORCH, "--index-url", choice.index_url]


def test_macos_takes_pypis_build_and_overrides_win():
    assert torch_env.choose_torch(None, platform="darwin", environ={}).index_url is None
    pinned = torch_env.choose_torch("570.1", platform="win32",
                                    environ={torch_env.ENV_TORCH: LOCAL_TORCH,
                                             torch_env.ENV_TORCH_INDEX: "pypi"})
    assert pinned.pip_args() == [LOCAL_TORCH]
    mirror = torch_env.choose_torch(None, platform="linux",
                                    environ={torch_env.ENV_TORCH_INDEX: "https://mirror.example/whl"})
    assert mirror.index_url == "https://mirror.example/whl"


def test_environment_lives_in_the_user_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(torch_env.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert torch_env.env_dir() == tmp_path / "qgis-unravel" / "worker-env"
        assert torch_env.env_python(tmp_path / "e") == tmp_path / "e" / "bin" / "python"
    assert torch_env.ready_python() is None  # nothing was set up there


def wait_for_task(task, timeout_s: float) -> None:
    ended = []
    task.ended.connect(lambda t: ended.append(t))
    deadline = time.monotonic() + timeout_s
    while not ended and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert ended, "the set-up task did not end in time"


@pytest.fixture
def private_env(monkeypatch, tmp_path):
    monkeypatch.setenv(torch_env.ENV_DIR, str(tmp_path / "data" / "worker-env"))
    monkeypatch.setenv(torch_env.ENV_TORCH, LOCAL_TORCH)
    monkeypatch.setenv(torch_env.ENV_TORCH_INDEX, "pypi")
    interpreter.clear_cache()
    yield tmp_path / "data" / "worker-env"
    QgsSettings().remove("qgis_unravel/worker_python")
    interpreter.clear_cache()


def test_cancel_removes_the_half_made_environment(qgis_app, private_env):
    task = TorchEnvTask()
    lines = []
    task.logLine.connect(lines.append)
    task.logLine.connect(lambda line: task.cancel() if line.startswith("$ ") else None)
    QgsApplication.taskManager().addTask(task)
    wait_for_task(task, 120)
    assert task.result is None and task.cancelled_by_user
    assert "cancelled" in task.error and "nothing was changed" in task.error
    assert not private_env.exists() and torch_env.ready_python() is None
    log = (private_env.parent / torch_env.LOG_NAME).read_text(encoding="utf-8")
    assert "stopped: the set-up was cancelled" in log


@pytest.mark.slow
def test_setup_task_makes_a_working_worker_environment_from_scratch(qgis_app, private_env):
    """The Debian 12 path: QGIS's Python without ensurepip (venv --without-pip, pip put in from
    outside), torch and rasterio from the package index, the worker started from it."""
    QgsSettings().setValue("qgis_unravel/worker_python", "/usr/bin/python3")  # chosen, but no torch
    dialog = TorchEnvDialog(choice=torch_env.choose_torch(None))
    assert LOCAL_TORCH in dialog.intro.text() and str(private_env) in dialog.intro.text()
    task = TorchEnvTask(with_pip=False)
    task.logLine.connect(dialog.log.appendPlainText)
    started = time.monotonic()
    QgsApplication.taskManager().addTask(task)
    wait_for_task(task, 1500)
    assert task.error == "" and task.result is not None, task.error
    print(f"environment set up in {time.monotonic() - started:.0f} s")
    python = torch_env.env_python(private_env)
    assert task.result.python == str(python) and task.result.torch.startswith("2.13.0")
    marker = json.loads((private_env / torch_env.MARKER).read_text(encoding="utf-8"))
    assert marker["plugin_version"] == paths.version()
    assert "--without-pip" in dialog.log.toPlainText()
    assert settings.load().worker_python == ""  # the broken choice gave way to the new environment
    # From now on it is the worker Python the plugin finds first, and it runs the plugin's engine.
    assert torch_env.ready_python() == str(python)
    assert interpreter.candidates()[0] == str(python)
    found = interpreter.find_worker_python()
    assert found.ok and found.python == str(python) and "rasterio" in found.versions
    client = WorkerClient(str(python), idle_s=30)
    try:
        hello = client.start()
    finally:
        client.stop()
    assert hello["torch"].startswith("2.13.0") and hello["engine_path"] == str(paths.PACKAGE_DIR)


def test_pip_comes_from_its_own_wheel_when_qgis_python_has_no_pip(tmp_path):
    """Debian's QGIS without python3-pip: neither ensurepip nor QGIS's pip can put pip into the
    environment, so pip's wheel is fetched from PyPI and installs itself."""
    import subprocess

    folder = tmp_path / "env"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip",
                    str(folder)], check=True, timeout=120)
    python = torch_env.env_python(folder)
    lines: list[str] = []
    # The environment's own Python stands for a base Python that has no pip at all.
    torch_env.bootstrap_pip(torch_env.Runner(lines.append), str(python), python)
    assert any("fetching pip's wheel from PyPI" in line for line in lines)
    version = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and str(folder) in version.stdout
    assert not list(folder.glob("pip-*.whl"))  # the downloaded wheel is not left behind
