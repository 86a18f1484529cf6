"""Distributed training on PyTorch's own engine, on the CPU: ``torchrun`` with 2 gloo processes
of batch 1 takes the same steps as one process with batch 2 (BatchNorm statistics frozen, no
drop-path, so that the only difference is how the batch is spread)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from qgis_unravel.detector.checkpoint import read_checkpoint
from qgis_unravel.synthetic import write_scene
from qgis_unravel.training.model import PRESETS, build_model

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch without the gloo backend",
)

COMMON = [
    "--classes", "plane,ship,small-vehicle,large-vehicle,storage-tank",
    "--preset", "pico", "--drop-path", "0", "--freeze-bn", "--tile-size", "256", "--overlap", "0",
    "--iterations", "2", "--warmup-iters", "1", "--lr", "1e-3", "--checkpoint-every", "2",
    "--threads", "1", "--no-progress", "--seed", "3",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    for seed in (21, 22):
        write_scene(folder / f"scene_{seed}.tif", folder / f"scene_{seed}.gpkg", seed=seed, size=256)
    return folder


def _train(args, nproc, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    prefix = [sys.executable, "-m", "qgis_unravel.app.cli"]
    if nproc > 1:
        prefix = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "qgis_unravel.app.cli",
        ]  # fmt: skip
    done = subprocess.run(prefix + args, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_gloo_processes_match_one_with_the_doubled_batch(data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _train(["train", "--data-dir", str(data), *COMMON, "--batch-size", "2", "--out", str(one)], 1, tmp_path)
    printed = _train(
        ["train", "--data-dir", str(data), *COMMON, "--batch-size", "1", "--out", str(two)], 2, tmp_path
    )
    assert "distributed: 2 processes (gloo)" in printed
    assert printed.count("done:") == 1  # rank 0 alone reports
    sd1, _ = read_checkpoint(one / "latest.pth")
    sd2, meta2 = read_checkpoint(two / "latest.pth")
    assert sd1.keys() == sd2.keys()
    for key, w1 in sd1.items():
        torch.testing.assert_close(sd2[key], w1, rtol=1e-4, atol=1e-5, msg=key)
    # both runs really trained: the weights moved away from the (seeded) initial ones
    torch.manual_seed(3)
    spec = dataclasses.replace(PRESETS["pico"], drop_path_rate=0.0)
    init = dict(build_model(spec, COMMON[1].split(",")).named_parameters())
    moved = [k for k, p in init.items() if not torch.allclose(p.detach(), sd1[k], atol=1e-5)]
    # (fixed filters and branches without gradient in two steps on tiny chips stay put)
    assert len(moved) > 100 and all(k in moved for k in init if k.startswith(("rpn_head.", "roi_head.")))
    log1 = [json.loads(line) for line in (one / "log.jsonl").read_text().splitlines()]
    log2 = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert log1[-1]["loss"] == pytest.approx(log2[-1]["loss"], rel=1e-4)
    assert log2[-1]["world_size"] == 2 and log2[-1]["images_per_s_per_gpu"] > 0
    assert "rss_mb" in log2[-1]
    assert meta2["iter"] == 2
    print(f"1 process: {log1[-1]['s_per_iter']} s/iter; 2 gloo processes: {log2[-1]['s_per_iter']} s/iter")
