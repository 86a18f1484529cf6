"""Shared test fixtures.

The golden reference data made with the real mmrotate stack lives in ``../shared/golden``
beside the checkout (or wherever ``QGIS_UNRAVEL_GOLDEN`` points). Outside CI a missing folder
skips the parity tests with a clear reason; in CI (``CI=true``) it is an error, so parity can
never pass silently by being skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _golden_path() -> Path:
    env = os.environ.get("QGIS_UNRAVEL_GOLDEN")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = _golden_path()
    if not (path / "README.md").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"golden reference data not found at {path}")
        pytest.skip(f"golden reference data not found at {path} (set QGIS_UNRAVEL_GOLDEN)")
    return path


@pytest.fixture(scope="session")
def reduced_golden(golden_dir):
    """(state dict, reference tensors) of the golden reduced UnravelNet model, read once."""
    import numpy as np
    import torch

    checkpoint = torch.load(golden_dir / "reduced_model.pth", map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], np.load(golden_dir / "reduced_model_io.npz")


@pytest.fixture(scope="session")
def test_device() -> str:
    """Where the parity tests run the network: ``QGIS_UNRAVEL_TEST_DEVICE`` (cpu, cuda, cuda:N),
    cpu by default; ``bench/gpu_check.sh`` sets it to run them on a GPU. TF32 is switched off
    there, since the tolerances are float32's (reduced precision is measured by the check)."""
    name = os.environ.get("QGIS_UNRAVEL_TEST_DEVICE", "cpu")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.fail(f"QGIS_UNRAVEL_TEST_DEVICE={name} but torch sees no CUDA GPU")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return name


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
