"""Find the Python interpreter that runs the worker, and check it can run the engine.

QGIS's own ``sys.executable`` is often the QGIS binary (``qgis.exe`` on Windows, ``qgis`` on
Linux desktops), so it is never started blindly. Candidates are probed once each with a tiny
script that tries the engine's imports; the answer is cached for the session. No QGIS import,
so Processing, the GUI and plain tests share this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from .env_location import ready_python

ENV_PYTHON = "QGIS_UNRAVEL_PYTHON"

# Modules the worker imports, with the pip name that provides each.
REQUIRED_MODULES = {"torch": "torch", "numpy": "numpy", "rasterio": "rasterio"}

_PROBE_SCRIPT = r"""
import importlib, json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable, "missing": {}, "versions": {}}
if sys.version_info < (3, 9):
    out["missing"]["python"] = "Python >= 3.9 is needed, this is " + sys.version.split()[0]
for name in MODULES:
    try:
        module = importlib.import_module(name)
        out["versions"][name] = str(getattr(module, "__version__", "?"))
    except Exception as exc:
        out["missing"][name] = type(exc).__name__ + ": " + str(exc)
try:
    import qgis_unravel.paths
    import qgis_unravel.worker.protocol
    out["engine_path"] = str(qgis_unravel.paths.PACKAGE_DIR)
except Exception as exc:
    out["missing"]["qgis_unravel"] = type(exc).__name__ + ": " + str(exc)
if "torch" in out["versions"]:
    import torch
    out["cuda"] = bool(torch.cuda.is_available())
print("UNRAVEL-PROBE " + json.dumps(out))
"""

PROBE_TIMEOUT_S = 120


@dataclass
class ProbeResult:
    """What one interpreter can do; ``ok`` when every engine import works."""

    python: str
    ok: bool
    missing: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cuda: bool = False
    error: str = ""

    def install_command(self) -> str:
        """The manual command that installs what is missing (for the README's fallback)."""
        return install_command(self.python, self.missing)

    def explain(self) -> str:
        """One paragraph for the message bar, written for a QGIS user: what is wrong, what to do."""
        if self.ok:
            return f"{self.python} can run the UnravelNet worker."
        if self.error:
            return (f"The Python interpreter {self.python} could not be used: {self.error}. "
                    f"{SETUP_HINT}")
        if "qgis_unravel" in self.missing and len(self.missing) == 1:
            return (f"The plugin's own code failed to load in {self.python}: "
                    f"{self.missing['qgis_unravel']}. {SETUP_HINT}")
        names = ", ".join(sorted(self.missing))
        return f"PyTorch is not set up yet for UnravelNet ({names} missing in {self.python}). {SETUP_HINT}"


SETUP_HINT = ("Press \"Set up PyTorch…\" (Raster > UnravelNet) to install it in a private "
              "environment; nothing in QGIS's own Python changes.")


def plugin_pythonpath() -> str:
    """The folder that holds the plugin's own ``qgis_unravel`` package."""
    return str(paths.PACKAGE_DIR.parent)


# Run a module of the plugin in an isolated interpreter: ``-I`` ignores PYTHON* variables
# (QGIS sets PYTHONPATH/PYTHONHOME for its own Python), the user's site-packages and the
# current folder, so a ``qgis_unravel`` folder where QGIS was started cannot shadow the
# plugin's copy. The folders to import from come first on sys.path, as a JSON list.
_BOOTSTRAP = (
    "import json, runpy, sys; "
    "sys.path[:0] = json.loads(sys.argv.pop(1)); "
    "target = sys.argv.pop(1); "
    "runpy.run_path(target, run_name='__main__') if target.endswith('.py') "
    "else runpy.run_module(target, run_name='__main__', alter_sys=True)"
)


def import_paths(extra: str = "") -> list[str]:
    """The plugin's parent folder, then ``extra`` (an os.pathsep list, for test engines)."""
    return [plugin_pythonpath()] + [part for part in extra.split(os.pathsep) if part]


def module_command(python: str, module: str, args: list[str] | None = None,
                   extra_paths: str = "") -> list[str]:
    """``python -m module args`` (or ``python script.py args`` for a ``.py`` path) isolated from
    the environment and the current folder."""
    return [python, "-I", "-X", "utf8", "-u", "-c", _BOOTSTRAP,
            json.dumps(import_paths(extra_paths)), module, *(args or [])]


def script_command(python: str, script: str, extra_paths: str = "") -> list[str]:
    """``python -c script`` with the same isolation and import paths as ``module_command``."""
    prelude = "import json, sys; sys.path[:0] = json.loads(sys.argv.pop(1))\n"
    return [python, "-I", "-X", "utf8", "-c", prelude + script, json.dumps(import_paths(extra_paths))]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker: unbuffered UTF-8 text, ``extra`` added (PYTHONPATH is not used
    for imports: the isolated interpreter ignores it; see ``import_paths``)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


def neutral_cwd() -> str:
    """A folder to start workers in: never the folder QGIS was started from."""
    return str(paths.PACKAGE_DIR.parent)


def install_command(python: str, missing: dict[str, str]) -> str:
    """``"python" -m pip install torch ...`` for the pip-installable missing modules."""
    packages = [REQUIRED_MODULES[name] for name in REQUIRED_MODULES if name in missing]
    if not packages:
        return ""
    return f'"{python}" -m pip install ' + " ".join(packages)


def qgis_python_candidates() -> list[str]:
    """Where QGIS's own Python usually is, from ``sys.prefix`` (never ``sys.executable`` blindly)."""
    found: list[str] = []
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix)):
        base = Path(prefix)
        for rel in (f"bin/python{sys.version_info[0]}.{sys.version_info[1]}", "bin/python3",
                    "python.exe", "python3.exe"):
            found.append(str(base / rel))
    if Path(sys.executable).name.lower().startswith("python"):
        found.append(sys.executable)
    which = shutil.which("python3")
    if which:
        found.append(which)
    return found


def checkout_venv_python() -> list[str]:
    """A ``.venv`` beside a source checkout of the plugin (developer installs)."""
    root = paths.PACKAGE_DIR.parent
    return [str(root / ".venv" / "bin" / "python"), str(root / ".venv" / "Scripts" / "python.exe")]


def candidates(user_setting: str | None = None) -> list[str]:
    """Interpreters to try, best first, without duplicates or missing files: the user's choice,
    ``$QGIS_UNRAVEL_PYTHON``, the environment "Set up PyTorch" made, a checkout's ``.venv``,
    then QGIS's own Python."""
    ordered: list[str] = []
    if user_setting:
        ordered.append(user_setting)
    if os.environ.get(ENV_PYTHON):
        ordered.append(os.environ[ENV_PYTHON])
    managed = ready_python()
    if managed:
        ordered.append(managed)
    ordered += checkout_venv_python()
    ordered += qgis_python_candidates()
    result: list[str] = []
    for path in ordered:
        if path and path not in result and Path(path).is_file():
            result.append(path)
    return result


_CACHE: dict[str, ProbeResult] = {}


def clear_cache() -> None:
    """Forget probe answers (after the user installed torch, say)."""
    _CACHE.clear()


def probe(python: str, timeout_s: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Run the import check in ``python``; a success is cached for the session.

    Failures are not cached: they are quick to repeat, and the user may have just installed
    what was missing, which must work without restarting QGIS.
    """
    if python in _CACHE:
        return _CACHE[python]
    result = _run_probe(python, timeout_s)
    if result.ok:
        _CACHE[python] = result
    return result


def _run_probe(python: str, timeout_s: float) -> ProbeResult:
    if not Path(python).is_file():
        return ProbeResult(python, False, error="no such file")
    script = "MODULES = " + json.dumps(list(REQUIRED_MODULES)) + "\n" + _PROBE_SCRIPT
    try:
        proc = subprocess.run(
            script_command(python, script), capture_output=True, text=True, timeout=timeout_s,
            env=worker_env(), stdin=subprocess.DEVNULL, cwd=neutral_cwd(), **hidden_window_flags(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return ProbeResult(python, False, error=f"{type(exc).__name__}: {exc}")
    for line in proc.stdout.splitlines():
        if line.startswith("UNRAVEL-PROBE "):
            data = json.loads(line[len("UNRAVEL-PROBE "):])
            missing = data.get("missing", {})
            return ProbeResult(python, not missing, missing, data.get("versions", {}),
                               bool(data.get("cuda", False)))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return ProbeResult(python, False, error="it is not a working Python (" + " ".join(tail)[:300] + ")")


def hidden_window_flags() -> dict:
    """On Windows, start console programs without flashing a console window."""
    if sys.platform == "win32":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {}


def find_worker_python(user_setting: str | None = None) -> ProbeResult:
    """The first candidate that can run the engine, else the best explanation of why none can.

    A user setting that does not work is reported as is (the user chose it), rather than
    silently replaced by another interpreter.
    """
    found = candidates(user_setting)
    if user_setting:
        if user_setting not in found:
            return ProbeResult(user_setting, False, error="the file does not exist (check the "
                               "worker Python in the UnravelNet settings)")
        return probe(user_setting)
    first_failure: ProbeResult | None = None
    for python in found:
        result = probe(python)
        if result.ok:
            return result
        if first_failure is None or (first_failure.error and not result.error):
            first_failure = result
    if first_failure is None:
        return ProbeResult("python3", False, error="no Python interpreter was found; set one in "
                           "the UnravelNet settings or the QGIS_UNRAVEL_PYTHON environment variable")
    return first_failure
