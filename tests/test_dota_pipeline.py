"""The DOTA path end to end on a tiny DOTA-format dataset written by the test: split, train a
few iterations (from the patches and from the original images), detect by patches and merge,
write the Task1 submission and score it; plus the recipes' augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from qgis_unravel.app.train_cli import main
from qgis_unravel.training.dota.augment import RecipeAugment, random_flip, rotate_boxes, rotate_image
from qgis_unravel.training.dota.classes import DOTA_V10
from qgis_unravel.training.dota.dataset import DotaDataset, targets
from qgis_unravel.training.dota.labeltxt import read_labeltxt
from qgis_unravel.training.dota.split import SplitConfig, list_images
from qgis_unravel.training.dota.synthetic import write_synthetic_dota

SPLIT = ["--patch-size", "256", "--gap", "64"]


@pytest.fixture(scope="module")
def dota(tmp_path_factory):
    root = tmp_path_factory.mktemp("dota") / "trainval"
    n = write_synthetic_dota(root, [11, 12], size=384)
    assert n > 5
    return root


def test_synthetic_dota_folder_is_dota_format(dota):
    items = list_images(dota)
    assert [i.id for i in items] == ["S0011", "S0012"]
    obj = read_labeltxt(items[0].labels)
    assert obj.source == "synthetic" and obj.gsd == pytest.approx(0.15)
    assert set(obj.names) <= set(DOTA_V10) and (obj.difficulty == 1).any()


def test_difficult_objects_left_out_when_ignored(dota):
    obj = read_labeltxt(list_images(dota)[0].labels)
    kept, _, _ = targets(obj, DOTA_V10, "keep")
    ignored, _, _ = targets(obj, DOTA_V10, "ignore")
    assert len(kept) - len(ignored) == int((obj.difficulty == 1).sum())
    assert (kept[:, 2] >= kept[:, 3]).all()  # le90: w >= h


def test_split_folder_and_on_the_fly_split_agree(dota, tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["dota", "split", "--src", str(dota), "--out", str(out), *SPLIT]) == 0
    names = sorted(p.stem for p in (out / "images").glob("*.png"))
    # 384 px images in 256 px windows with gap 64: starts 0 and 128 on each axis -> 4 per image
    assert names[:4] == [
        "S0011__256__0___0",
        "S0011__256__0___128",
        "S0011__256__128___0",
        "S0011__256__128___128",
    ]
    assert len(names) == 8 and len(list((out / "annfiles").glob("*.txt"))) == 8
    assert "8 patches written" in capsys.readouterr().out
    cfg = SplitConfig(256, 64)
    on_disk = DotaDataset(out, DOTA_V10, cfg, "keep")
    on_the_fly = DotaDataset(dota, DOTA_V10, cfg, "keep")
    assert len(on_disk) == len(on_the_fly) > 0
    for i in range(len(on_disk)):
        a, b = on_disk[i], on_the_fly[i]
        assert np.array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], atol=1e-4)
        assert np.array_equal(a[2], b[2])
    assert main(["dota", "split", "--src", str(dota), "--out", str(out), *SPLIT]) == 2  # never overwrites


def test_train_test_merge_evaluate(dota, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--dota",
            str(dota),
            *SPLIT,
            "--preset",
            "pico",
            "--iterations",
            "2",
            "--batch-size",
            "1",
            "--warmup-iters",
            "1",
            "--checkpoint-every",
            "2",
            "--out",
            str(run),
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "DOTA" in out and "difficult: ignore" in out
    assert (run / "latest.pth").is_file()
    sub = tmp_path / "sub"
    code = main(
        [
            "dota",
            "test",
            "--model",
            str(run / "latest.pth"),
            "--data",
            str(dota),
            "--out",
            str(sub),
            *SPLIT,
            "--score-threshold",
            "0.0",
            "--json",
            str(tmp_path / "ap.json"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in sub.glob("Task1_*.txt"))
    assert files == sorted(f"Task1_{c}.txt" for c in DOTA_V10)
    lines = [line for f in sub.glob("Task1_*.txt") for line in f.read_text().splitlines()]
    assert lines and all(len(line.split()) == 10 and line.split()[0] in ("S0011", "S0012") for line in lines)
    assert "mAP" in printed and (tmp_path / "ap.json").is_file()
    # the written submission scores the same through 'dota eval'
    assert main(["dota", "eval", "--submission", str(sub), "--labels", str(dota)]) == 0
    again = capsys.readouterr().out
    assert again.splitlines()[-2] == printed.splitlines()[-2]  # the mAP line
    # the score threshold reaches the detector (it was once set on the model and ignored)
    strict = tmp_path / "strict"
    args = ["dota", "test", "--model", str(run / "latest.pth"), "--data", str(dota), "--out", str(strict),
            *SPLIT, "--score-threshold", "1.0"]
    assert main(args) == 0
    assert not [line for f in strict.glob("Task1_*.txt") for line in f.read_text().splitlines()]


def test_random_flip_probabilities():
    rng = np.random.default_rng(0)
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, axis=2)
    seen = {}
    for _ in range(400):
        out, _ = random_flip(image, np.zeros((0, 5)), rng)
        key = (out[0, 0, 0], out[0, 3, 0])
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 4 and min(seen.values()) > 60  # none, h, v and diagonal, each ~1/4


def test_rotation_moves_pixels_and_boxes_together():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[8:16, 40:56] = 255  # a 16 x 8 block centred at (48, 12)
    box = np.array([[48.0, 12.0, 16.0, 8.0, 0.0]])
    for degrees in (90.0, 30.0, -135.0):
        turned = rotate_image(image, degrees)[..., 0].astype(float)
        ys, xs = np.nonzero(turned > 127)
        moved = rotate_boxes(box, degrees, 64, 64)[0]
        assert np.mean(xs) + 0.5 == pytest.approx(moved[0], abs=0.6)
        assert np.mean(ys) + 0.5 == pytest.approx(moved[1], abs=0.6)
    # 90 degrees counter-clockwise on screen: the long side turns vertical
    assert rotate_boxes(box, 90.0, 64, 64)[0, 4] == pytest.approx(-np.pi / 2)


def test_rectangular_classes_turn_by_quarter_turns_only():
    aug = RecipeAugment(rect_labels=[9])
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    box = np.array([[32.0, 32.0, 20.0, 10.0, 0.0]])
    angles = set()
    for seed in range(40):
        _, boxes, labels = aug(image, box, np.array([9]), np.random.default_rng(seed))
        angles.add(round(float(abs(boxes[0, 4])), 4))
    assert angles <= {0.0, round(np.pi / 2, 4)}
