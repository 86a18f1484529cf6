"""The committed golden data: complete, unchanged since generation (MANIFEST), small, usable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import golden_data
import numpy as np
import pytest
import torch

MAX_BYTES = 10_000_000  # about 10 MB, as the issue asks (Oriented R-CNN parts 7.0 MB, Refined-Det 2.2)


def test_every_file_matches_the_manifest():
    assert golden_data.manifest_problems() == []


def test_manifest_covers_every_part():
    listed = golden_data.read_manifest()
    for rel in ("op_roi_align_rotated.npz", "op_nms_rotated.npz", "op_box_iou_rotated.npz",
                "op_bbox_coders.npz", "op_transforms.npz", "state_dict_keys_tiny.txt",
                "reduced_model.pth.xz", "reduced_model_io.npz", "legnet/legnet_reduced_model.pth.xz",
                "legnet/legnet_reduced_model_io.npz", "training/train_step.npz",
                "refined_det/reduced_model.pth.xz", "refined_det/reduced_model_io.npz",
                "refined_det/train_step.npz"):
        assert rel in listed, rel


def test_golden_folder_stays_small():
    total = sum(p.stat().st_size for p in golden_data.GOLDEN.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"tests/golden is {total / 1e6:.1f} MB"


def test_changed_or_extra_files_are_reported(tmp_path: Path):
    copy = tmp_path / "golden"
    shutil.copytree(golden_data.GOLDEN, copy)
    assert golden_data.manifest_problems(copy) == []
    target = copy / "op_transforms.npz"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    (copy / "stray.npz").write_bytes(b"x")
    (copy / "op_nms_rotated.npz").unlink()
    problems = "\n".join(golden_data.manifest_problems(copy))
    assert "op_transforms.npz: sha256 differs" in problems
    assert "stray.npz: in the folder but not in MANIFEST" in problems
    assert "op_nms_rotated.npz: listed in MANIFEST but missing" in problems


def test_sampled_arrays_are_well_formed():
    """Every sampled array (docs/golden.md, "Samples") has its three entries, and its positions
    are sorted, unique and inside its shape."""
    count = 0
    for rel in golden_data.data_files():
        if not rel.endswith(".npz") or rel.startswith("refined_det/"):
            continue
        with np.load(golden_data.GOLDEN / rel) as npz:
            for name in golden_data.array_names(npz):
                if name in npz.files:
                    continue
                shape, index, value = (npz[f"{name}@{part}"] for part in ("shape", "index", "value"))
                assert index.shape == value.shape and index.ndim == 1, (rel, name)
                assert np.all(np.diff(index) > 0), (rel, name)
                assert 0 <= index[0] and index[-1] < np.prod(shape), (rel, name)
                count += 1
    assert count > 0


def test_a_sample_catches_a_changed_element():
    full = torch.arange(24.0).reshape(2, 3, 4)
    npz = {"m@shape": np.array([2, 3, 4]), "m@index": np.array([0, 5, 23]),
           "m@value": np.array([0.0, 5.0, 23.0], dtype=np.float32)}
    got, ref = golden_data.compared(full, npz, "m")
    torch.testing.assert_close(got, ref)
    changed = full.clone()
    changed[1, 2, 3] += 1e-3
    got, ref = golden_data.compared(changed, npz, "m")
    assert not torch.allclose(got, ref, atol=1e-4, rtol=0)
    with pytest.raises(AssertionError, match="shape"):
        golden_data.compared(full[0], npz, "m")


def test_ci_never_builds_the_reference(repo_root: Path):
    """`make test` (what .ci/run calls) neither builds the reference environment nor regenerates
    the golden data: those are `make golden`'s, run by hand."""
    assert "exec make test" in (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    plan = subprocess.run(["make", "-n", "test"], cwd=repo_root, capture_output=True, text=True, check=True)
    assert "build_env.sh" not in plan.stdout and "generate.py" not in plan.stdout


def test_expanded_folder_holds_loadable_checkpoints(golden_dir: Path):
    for rel in ("reduced_model.pth", "legnet/legnet_reduced_model.pth", "refined_det/reduced_model.pth"):
        ckpt = torch.load(golden_dir / rel, map_location="cpu", weights_only=True)
        assert set(ckpt) == {"meta", "state_dict"} and len(ckpt["meta"]["CLASSES"]) == 15


def test_project_reads_only_its_own_golden_data(repo_root: Path):
    """The reference folder shared beside the checkout stays an outside cross-check: no test or
    bench reaches for it."""
    needles = ("shared" + "/golden", '"shared" / ' + '"golden"')  # split, or this file would match
    for folder in ("tests", "bench"):
        for path in (repo_root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not any(n in text for n in needles), path
