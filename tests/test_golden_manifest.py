"""The committed golden data: complete, unchanged since generation (MANIFEST), small, usable."""

from __future__ import annotations

import shutil
from pathlib import Path

import golden_data
import torch

MAX_BYTES = 15_000_000  # about 11 MB for the Oriented R-CNN parts and 3 MB for Refined-Det


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
