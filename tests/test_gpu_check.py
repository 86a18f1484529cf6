"""bench/gpu_check.sh --cpu-dry-run: the GPU check's every step runs (on CPU, tiny sizes) in CI.

On a GPU machine the same script proves the CUDA path; this keeps it from rotting between the
rare sessions that have one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

STEPS = ("runtime", "parity", "amp-golden", "amp-demo", "throughput", "end-to-end")


@pytest.mark.timeout(1800)  # about a minute on a quiet 2-core machine; far more on a crowded one
def test_gpu_check_dry_run_runs_every_step_on_cpu(repo_root, golden_dir, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "QGIS_UNRAVEL_GOLDEN": str(golden_dir)}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu-dry-run", "--out", str(tmp_path)],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=1800)
    summary = (tmp_path / "gpu_check-dry-run.txt").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CPU DRY RUN" in summary
    for step in STEPS:
        assert f"[{step}] ok" in summary, summary
    assert "bf16 vs fp32" in summary and "tiles/s" in summary and "ratio" in summary
    assert not list((repo_root / "bench" / "results").glob("gpu_check-dry-run*"))
