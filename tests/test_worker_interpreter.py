"""Finding the worker's Python: order of candidates, the import probe, the install command."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_python_without_torch_gets_exact_install_command():
    result = interpreter.probe(SYSTEM_PYTHON)
    assert not result.ok and "torch" in result.missing
    assert result.install_command().startswith(f'"{SYSTEM_PYTHON}" -m pip install torch')
    assert "cannot import" in result.explain() and "Traceback" not in result.explain()


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


def test_worker_env_puts_the_plugin_first(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = interpreter.worker_env({"PYTHONPATH": "/extra"})
    parts = env["PYTHONPATH"].split(":")
    assert parts == [interpreter.plugin_pythonpath(), "/extra", "/elsewhere"]
