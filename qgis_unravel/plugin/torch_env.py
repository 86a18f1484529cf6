"""The worker's private Python environment: made by the plugin, with no shell and no admin rights.

QGIS's own Python is never changed (on Debian it is "externally managed", and torch inside QGIS's
process crashes it). Instead a virtual environment is made from QGIS's Python in the user's data
folder, and torch plus the engine's other dependencies are installed into it with its own pip:

1. ``python -m venv ENV`` (with pip). Where ``ensurepip`` is missing (Debian without
   python3-venv), ``venv --without-pip`` and pip is put in from QGIS's pip (``pip --python``) or,
   failing that, from pip's wheel on PyPI, which runs itself to install itself.
2. torch, chosen by ``choose_torch``: the CUDA build that the NVIDIA driver found by
   ``nvidia-smi`` supports, else the CPU build (PyTorch's own wheel indexes); on macOS PyPI's.
3. numpy, rasterio, pyproj, platformdirs (PyPI wheels; the worker needs no QGIS and no GDAL of
   QGIS's).
4. The worker is started from the new environment; only when its ``hello`` reports torch and the
   plugin's own engine is the environment marked ready (``MARKER``), and from then on it is the
   worker Python the plugin finds first.

Per OS the environment's Python is ``ENV/bin/python`` (Linux, macOS) or ``ENV\\Scripts\\python.exe``
(Windows, OSGeo4W or standalone installer). This module imports neither QGIS nor torch; the
QGIS task and dialog around it are in ``torch_env_task``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .. import paths
from .env_location import ENV_DIR, MARKER, data_dir, env_dir, env_python, read_marker, ready_python
from .interpreter import hidden_window_flags, qgis_python_candidates

__all__ = ["ENV_DIR", "MARKER", "data_dir", "env_dir", "env_python", "read_marker", "ready_python",
           "choose_torch", "set_up", "SetupError", "SetupCancelled", "TorchChoice"]

ENV_TORCH = "QGIS_UNRAVEL_TORCH"  # the torch requirement, e.g. "torch==2.13.0"
ENV_TORCH_INDEX = "QGIS_UNRAVEL_TORCH_INDEX"  # a wheel index URL, or "pypi" for the default
LOG_NAME = "setup-log.txt"
ENGINE_PACKAGES = ("numpy", "rasterio", "pyproj", "platformdirs")
DEFAULT_TORCH = "torch>=2.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
PYPI_PIP_JSON = "https://pypi.org/pypi/pip/json"
MIN_PYTHON = (3, 9)

# (lowest NVIDIA driver major version, PyTorch wheel tag), newest first: CUDA 13 needs driver
# 580+, CUDA 12.8 570+, CUDA 12.x builds run on 525+ (minor-version compatibility), 11.8 on 450+.
CUDA_WHEELS = ((580, "cu130"), (570, "cu128"), (525, "cu126"), (450, "cu118"))

Log = Callable[[str], None]
Progress = Callable[[float], None]
Cancelled = Callable[[], bool]


class SetupError(RuntimeError):
    """A step failed; the message says what happened and what the user can do."""


class SetupCancelled(SetupError):
    """The user cancelled; nothing is used until a set-up completes."""


# -- which torch ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchChoice:
    """What pip installs for torch and why (shown to the user before anything is downloaded)."""

    requirement: str
    index_url: Optional[str]
    build: str  # "cpu", "cu126", ... or "default"
    reason: str

    def pip_args(self) -> list[str]:
        args = [self.requirement]
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args


def nvidia_driver_version(timeout_s: float = 10.0) -> str | None:
    """The NVIDIA driver's version from ``nvidia-smi`` ("570.86.15"), None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None and sys.platform == "win32":
        candidate = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        exe = str(candidate) if candidate.is_file() else None
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout_s,
                             **hidden_window_flags())
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\d+(\.\d+)+", out.stdout or "")
    return match.group(0) if out.returncode == 0 and match else None


def cuda_build_for_driver(driver: str | None) -> str | None:
    """The newest PyTorch CUDA wheel tag this driver runs, None when it runs none."""
    if not driver:
        return None
    try:
        major = int(driver.split(".")[0])
    except ValueError:
        return None
    for lowest, tag in CUDA_WHEELS:
        if major >= lowest:
            return tag
    return None


def choose_torch(driver: str | None, platform: str = sys.platform,
                 environ: dict[str, str] | None = None) -> TorchChoice:
    """The torch requirement and wheel index for this machine.

    ``QGIS_UNRAVEL_TORCH`` replaces the requirement and ``QGIS_UNRAVEL_TORCH_INDEX`` the index
    ("pypi": pip's default index and configuration), for offline mirrors, pinned versions and
    tests.
    """
    environ = os.environ if environ is None else environ
    requirement = environ.get(ENV_TORCH, "").strip() or DEFAULT_TORCH
    index = environ.get(ENV_TORCH_INDEX, "").strip()
    if platform == "darwin":
        choice = TorchChoice(requirement, None, "default", "macOS: PyPI's build (CPU and Apple GPU)")
    else:
        tag = cuda_build_for_driver(driver)
        if tag:
            choice = TorchChoice(requirement, PYTORCH_INDEX + tag, tag,
                                 f"NVIDIA driver {driver}: the CUDA build {tag}")
        elif driver:
            choice = TorchChoice(requirement, PYTORCH_INDEX + "cpu", "cpu",
                                 f"NVIDIA driver {driver} is too old for PyTorch's CUDA builds: CPU build")
        else:
            choice = TorchChoice(requirement, PYTORCH_INDEX + "cpu", "cpu",
                                 "no NVIDIA driver found: the CPU build")
    if index:
        url = None if index.lower() == "pypi" else index
        choice = TorchChoice(requirement, url, choice.build if url else "default",
                             choice.reason + f" (index set by {ENV_TORCH_INDEX}: {index})")
    return choice


# -- running commands -------------------------------------------------------------------------------
@dataclass
class Runner:
    """Runs commands with their output streamed to ``log`` and killed when ``cancelled``."""

    log: Log
    cancelled: Cancelled = lambda: False
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def check_cancel(self) -> None:
        if self.cancelled():
            raise SetupCancelled("the set-up was cancelled")

    def run(self, cmd: list[str], what: str, timeout_s: float = 3600.0) -> str:
        """Run ``cmd``; return its output, raise SetupError (with the last lines) on failure."""
        self.check_cancel()
        self.log("$ " + " ".join(_quote(part) for part in cmd))
        popen_extra: dict = dict(hidden_window_flags())
        if sys.platform != "win32":
            popen_extra["start_new_session"] = True  # so a cancel ends pip's children too
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                    errors="replace", env=self.env, cwd=tempfile.gettempdir(),
                                    **popen_extra)
        except OSError as exc:
            raise SetupError(f"{what}: could not start {cmd[0]} ({exc})") from exc
        lines: list[str] = []

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip()
                if line:
                    lines.append(line)
                    self.log(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        started = time.monotonic()
        while proc.poll() is None:
            if self.cancelled() or time.monotonic() - started > timeout_s:
                _terminate(proc)
                reader.join(5)
                if self.cancelled():
                    raise SetupCancelled("the set-up was cancelled")
                raise SetupError(f"{what}: no answer within {timeout_s:.0f} s")
            time.sleep(0.2)
        reader.join(10)
        if proc.returncode != 0:
            tail = " | ".join(lines[-4:])[-600:]
            raise SetupError(f"{what} failed (exit code {proc.returncode}): {tail}")
        return "\n".join(lines)


def _terminate(proc: subprocess.Popen) -> None:
    try:
        if sys.platform != "win32":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(10)


def _quote(part: str) -> str:
    return f'"{part}"' if " " in part else part


# -- the steps --------------------------------------------------------------------------------------
def base_python(runner: Runner) -> str:
    """QGIS's own Python (>= 3.9) to make the environment from."""
    tried = []
    for python in dict.fromkeys(qgis_python_candidates()):
        if not Path(python).is_file():
            continue
        tried.append(python)
        try:
            out = subprocess.run([python, "-I", "-c", "import sys, venv; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60, **hidden_window_flags())
        except (OSError, subprocess.SubprocessError):
            continue
        numbers = tuple(int(n) for n in re.findall(r"\d+", out.stdout)[:2])
        if out.returncode == 0 and len(numbers) == 2 and numbers >= MIN_PYTHON:
            runner.log(f"base Python: {python} ({numbers[0]}.{numbers[1]})")
            return python
    raise SetupError("no Python 3.9 or newer with the venv module was found beside QGIS "
                     f"(tried: {', '.join(tried) or 'none'}); see the README's manual set-up")


def create_venv(runner: Runner, base: str, folder: Path, with_pip: bool = True) -> Path:
    """A fresh virtual environment at ``folder`` with a working pip in it."""
    if folder.exists():
        runner.log(f"removing the previous environment {folder}")
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    python = env_python(folder)
    if with_pip:
        try:
            runner.run([base, "-I", "-m", "venv", str(folder)], "creating the environment")
            return python
        except SetupCancelled:
            raise
        except SetupError as exc:
            runner.log(f"venv with pip did not work ({exc}); trying without ensurepip")
            shutil.rmtree(folder, ignore_errors=True)
    runner.run([base, "-I", "-m", "venv", "--without-pip", str(folder)], "creating the environment")
    bootstrap_pip(runner, base, python)
    return python


def bootstrap_pip(runner: Runner, base: str, python: Path) -> None:
    """Put pip into an environment made without it: QGIS's pip first, else pip's own wheel."""
    try:
        runner.run([base, "-I", "-m", "pip", "--python", str(python), "install", "--no-input", "pip"],
                   "installing pip with QGIS's pip")
        return
    except SetupCancelled:
        raise
    except SetupError as exc:
        runner.log(f"QGIS's pip could not do it ({exc}); fetching pip's wheel from PyPI")
    wheel = download_pip_wheel(runner, python.parent.parent)
    runner.run([str(python), "-I", str(wheel / "pip"), "install", "--no-input", str(wheel)],
               "installing pip from its wheel")
    wheel.unlink(missing_ok=True)


def download_pip_wheel(runner: Runner, folder: Path, index_json: str = PYPI_PIP_JSON) -> Path:
    """pip's newest universal wheel from PyPI (a wheel of pip can run itself)."""
    runner.check_cancel()
    try:
        with urllib.request.urlopen(index_json, timeout=60) as answer:
            info = json.load(answer)
        url = next(item["url"] for item in info["urls"]
                   if item.get("packagetype") == "bdist_wheel" and item["url"].endswith("py3-none-any.whl"))
        url = urllib.parse.urljoin(index_json, url)  # mirrors may answer with relative links
        target = folder / url.rsplit("/", 1)[1]
        runner.log(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=120) as answer, open(target, "wb") as out:
            shutil.copyfileobj(answer, out)
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise SetupError(f"could not download pip from PyPI ({exc}); check the network or proxy") from exc
    return target


def pip_install(runner: Runner, python: Path, args: list[str], what: str) -> None:
    runner.run([str(python), "-I", "-m", "pip", "install", "--no-input", "--progress-bar", "off",
                "--disable-pip-version-check", *args], what)


def verify(runner: Runner, python: Path) -> dict:
    """Start the worker from the environment; its hello must report torch and our engine."""
    from .worker_client import WorkerClient, WorkerError

    runner.check_cancel()
    runner.log("starting the worker from the new environment…")
    client = WorkerClient(str(python), idle_s=30, log=runner.log)
    try:
        hello = client.start(timeout_s=300)
    except WorkerError as exc:
        raise SetupError(f"the worker did not start from the new environment: {exc}") from exc
    finally:
        client.stop()
    if not hello.get("torch"):
        raise SetupError(f"the worker started but cannot import torch: {hello.get('torch_error')}")
    from .interpreter import probe

    checked = probe(str(python))
    if not checked.ok:
        missing = "; ".join(f"{name}: {why}" for name, why in checked.missing.items()) or checked.error
        raise SetupError(f"the new environment cannot import what the engine needs ({missing})")
    runner.log(f"worker ok: Python {hello.get('python')}, torch {hello.get('torch')}, "
               f"CUDA {'available' if hello.get('cuda') else 'not available'}, "
               f"engine {hello.get('engine_version')} from {hello.get('engine_path')}")
    return hello


@dataclass
class SetupResult:
    python: str
    torch: str
    cuda: bool
    build: str
    seconds: float


def set_up(log: Log, progress: Progress = lambda _p: None, cancelled: Cancelled = lambda: False,
           folder: Path | None = None, choice: TorchChoice | None = None,
           with_pip: bool = True) -> SetupResult:
    """Make the environment from scratch and verify it; see the module docstring.

    ``with_pip=False`` takes the path of a Python without ensurepip (tested here even where
    ensurepip exists). On any failure or cancel the half-made environment is removed.
    """
    started = time.monotonic()
    folder = folder or env_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(folder.parent / LOG_NAME, "w", encoding="utf-8")  # noqa: SIM115

    def both(line: str) -> None:
        log_file.write(line + "\n")
        log_file.flush()
        log(line)

    runner = Runner(both, cancelled)
    runner.env.pop("PIP_REQUIRE_VIRTUALENV", None)
    try:
        choice = choice or choose_torch(nvidia_driver_version())
        both(f"environment: {folder}")
        both(f"torch: {' '.join(choice.pip_args())} ({choice.reason})")
        progress(1)
        base = base_python(runner)
        python = create_venv(runner, base, folder, with_pip)
        progress(10)
        pip_install(runner, python, choice.pip_args(), "installing PyTorch")
        progress(70)
        pip_install(runner, python, list(ENGINE_PACKAGES), "installing numpy, rasterio and pyproj")
        progress(90)
        hello = verify(runner, python)
        result = SetupResult(str(python), str(hello.get("torch")), bool(hello.get("cuda")),
                             choice.build, round(time.monotonic() - started, 1))
        marker = {**asdict(result), "plugin_version": paths.version(), "base_python": base,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (folder / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        progress(100)
        both(f"done in {result.seconds:.0f} s: the worker now runs in {python}")
        return result
    except BaseException as exc:
        both(f"stopped: {exc}")
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        log_file.close()
