"""The shipped demo model: loadable, within the size budget, and accurate on held-out scenes."""

from __future__ import annotations

import json

import pytest

from qgis_unravel.paths import models_dir

CARD_ID = "demo-unravelnet-synthetic"
# The target on held-out scenes. Measured: 0.980 on seeds 5000-5005 and 0.944 on 5000-5023
# (docs/training.md), 1.000 on the two scenes drawn here (the stage 1 model scored 0.904 on them).
MIN_MAP = 0.85


@pytest.fixture(scope="module")
def weights():
    card = json.loads((models_dir() / f"{CARD_ID}.json").read_text())
    path = models_dir() / card["weights"]["path"]
    assert path.is_file(), f"the demo model's weights are missing: {path}"
    return path, card


def test_demo_weights_fit_the_budget_and_load_in_mmrotate_format(weights):
    import torch

    from qgis_unravel import load_detector

    path, card = weights
    assert path.stat().st_size <= 30 * 1024 * 1024
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    assert list(raw["meta"]["CLASSES"]) == card["classes"]
    detector = load_detector(path)
    assert detector.classes == card["classes"]
    assert detector.info["fpn_width"] == card["architecture"]["neck_channels"]
    if card["weights"]["size_bytes"] is not None:
        assert path.stat().st_size == card["weights"]["size_bytes"]


def test_demo_model_accuracy_on_held_out_scenes(weights, tmp_path, capsys):
    from qgis_unravel.app.train_cli import main
    from qgis_unravel.synthetic import write_scene

    rasters, labels = [], []
    for seed in (6001, 6002):  # never used for training (1000-1119) nor for the reported figure
        tif, gpkg = tmp_path / f"s{seed}.tif", tmp_path / f"s{seed}.gpkg"
        write_scene(tif, gpkg, seed, 1024)
        rasters.append(str(tif))
        labels.append(str(gpkg))
    report = tmp_path / "ap.json"
    code = main(
        ["evaluate", "--model", CARD_ID, "--raster", *rasters, "--labels", *labels, "--json", str(report)]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    assert result["mAP"] >= MIN_MAP, capsys.readouterr().out
