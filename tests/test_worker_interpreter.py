"""Finding the worker's Python: order of candidates, the import probe, the install command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qgis_unravel import paths
from qgis_unravel.plugin import interpreter

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = str(REPO / ".venv" / "bin" / "python")
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv(interpreter.ENV_PYTHON, raising=False)
    interpreter.clear_cache()
    yield
    interpreter.clear_cache()


def test_user_setting_then_environment_then_checkout_venv(monkeypatch):
    monkeypatch.setenv(interpreter.ENV_PYTHON, VENV_PYTHON)
    found = interpreter.candidates(SYSTEM_PYTHON)
    assert found[0] == SYSTEM_PYTHON and found[1] == VENV_PYTHON
    assert len(found) == len(set(found))


def test_missing_files_are_not_candidates(tmp_path):
    assert str(tmp_path / "nope") not in interpreter.candidates(str(tmp_path / "nope"))


def test_python_without_torch_points_at_the_setup_button_not_a_shell():
    result = interpreter.probe(SYSTEM_PYTHON)
    assert not result.ok and "torch" in result.missing
    assert result.install_command().startswith(f'"{SYSTEM_PYTHON}" -m pip install torch')  # README
    text = result.explain()
    assert "Set up PyTorch" in text and "Traceback" not in text
    assert "pip" not in text and " -m " not in text  # no command line for a QGIS user


@pytest.mark.skipif(not Path(VENV_PYTHON).is_file(), reason="needs the project venv")
def test_venv_python_can_run_the_engine_and_is_cached():
    result = interpreter.probe(VENV_PYTHON)
    assert result.ok, result.explain()
    assert "torch" in result.versions
    assert interpreter.probe(VENV_PYTHON) is result  # no second subprocess


def test_failures_are_probed_again(monkeypatch):
    first = interpreter.probe(SYSTEM_PYTHON)
    assert interpreter.probe(SYSTEM_PYTHON) is not first  # torch may have been installed since


def test_chosen_python_that_does_not_exist_is_reported(tmp_path):
    result = interpreter.find_worker_python(str(tmp_path / "python9"))
    assert not result.ok and "does not exist" in result.explain()


def test_not_a_python_is_reported(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    result = interpreter.probe(str(fake))
    assert not result.ok and "not a working Python" in result.explain()


def test_worker_imports_the_plugins_engine_not_one_in_the_current_folder(tmp_path, monkeypatch):
    """QGIS started in a folder holding another ``qgis_unravel`` (or with PYTHONPATH pointing at
    one) must still run the plugin's own engine: the worker is isolated from both."""
    shadow = tmp_path / "qgis_unravel"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the shadow copy was imported')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    script = "import qgis_unravel.paths as p; print('ENGINE', p.PACKAGE_DIR, p.version())"
    proc = subprocess.run(interpreter.script_command(SYSTEM_PYTHON, script), capture_output=True,
                          text=True, env=interpreter.worker_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    engine = proc.stdout.split("ENGINE ", 1)[1].split()
    assert engine == [str(REPO / "qgis_unravel"), paths.version()]


def test_plugin_and_engine_share_one_version():
    meta = (REPO / "metadata.txt").read_text(encoding="utf-8")
    assert f"version={paths.version()}\n" in meta
