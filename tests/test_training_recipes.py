"""The published recipes as presets: their settings against the configs, the ImageNet backbone
cards (fetched, verified and cached by the zoo), and one command that trains with a recipe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_zoo_support import LocalFileServer

from qgis_unravel.app.train_cli import main
from qgis_unravel.training.recipes import RECIPES
from qgis_unravel.zoo import list_cards
from qgis_unravel.zoo.backbones import backbone_card_from_dict, list_backbone_cards
from qgis_unravel.zoo.cache import read_record
from qgis_unravel.zoo.resolve import ensure_weights


def test_recipes_carry_the_configs_settings():
    t, s = RECIPES["unravelnet-t-dota10"], RECIPES["unravelnet-s-dota10"]
    assert (t.model.backbone, t.model.stem_dim, t.model.depths, t.model.att_kernel) == (
        "UnravelNet", 32, (1, 4, 4, 2), (11, 11, 11, 11),
    )  # fmt: skip
    assert s.model.stem_dim == 64 and t.lr == s.lr == 1.5e-4 and t.step_epochs == (24, 33)
    for r in RECIPES.values():
        assert (r.epochs, r.batch_per_gpu, r.warmup_iters, r.weight_decay) == (36, 2, 500, 0.05)
        assert (r.dota_version, r.split, r.difficult, r.sync_bn) == ("1.0", "ss", "keep", True)
        assert r.model.drop_path_rate == 0.1 and r.model.fpn_width == 256 and r.model.roi_fc_width == 1024
    lt = RECIPES["legnet-t-dota10"]
    assert lt.model.backbone == "LEGNet" and lt.lr == 2e-4 and lt.step_epochs == (13, 24, 33)
    assert RECIPES["unravelnet-t-dota10"].reported_map == 78.51 and s.reported_map == 79.99


def test_recipe_epochs_become_iterations():
    # 12800 patches with objects (DOTA-v1.0 trainval, ss split), 8 GPUs x 2 images: 800 per epoch
    assert RECIPES["unravelnet-t-dota10"].iterations(12800, 8) == (28800, [19200, 26400])
    assert RECIPES["legnet-t-dota10"].iterations(12800, 1) == (230400, [83200, 153600, 211200])
    assert RECIPES["unravelnet-t-dota10"].iterations(5, 4) == (36, [24, 33])


def test_backbone_cards_are_separate_from_the_detectors():
    cards = {c.id: c for c in list_backbone_cards()}
    assert set(cards) == {r.backbone_card for r in RECIPES.values()}
    assert cards["unravelnet-t-imagenet"].weights.urls == (
        "https://github.com/AeroVILab-AHU/LEGNet/releases/download/pre-train/unravelnet_tiny.pth",
    )
    assert cards["legnet-s-imagenet"].weights.urls[0].endswith("/pre-train/LWEGNet_small.pth")
    for card in cards.values():
        assert card.weights.availability == "download" and card.weights.sha256 is None
    assert not set(cards) & {c.id for c in list_cards()}  # never offered as detectors


def test_backbone_weights_are_downloaded_verified_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "cache"))
    payload = b"backbone" * 1000
    with LocalFileServer({"/b.pth": payload}) as srv:
        data = json.loads(_card_file().read_text())
        data["weights"]["urls"] = [srv.url("/b.pth")]
        card = backbone_card_from_dict(data)
        path = ensure_weights(card, confirm=lambda c: True)
        assert path.read_bytes() == payload and path.parent.name == "unravelnet-t-imagenet"
        assert read_record(path)["sha256"]  # recorded on first download, checked later
        requests = len(srv.behaviour.seen)
        assert ensure_weights(card) == path and len(srv.behaviour.seen) == requests


def _card_file() -> Path:
    from qgis_unravel.zoo.backbones import backbones_dir

    return backbones_dir() / "unravelnet-t-imagenet.json"


def test_a_recipe_needs_dota_data(tmp_path, capsys):
    assert main(["train", "--preset", "unravelnet-t-dota10", "--out", str(tmp_path)]) == 2
    assert "give --dota FOLDER" in capsys.readouterr().err


def test_one_command_trains_with_a_recipe(tmp_path, capsys):
    from qgis_unravel.detector.backbones.unravelnet import UnravelNet
    from qgis_unravel.detector.checkpoint import read_checkpoint
    from qgis_unravel.training.dota.synthetic import write_synthetic_dota

    write_synthetic_dota(tmp_path / "dota", [11], size=384)
    backbone = tmp_path / "unravelnet_tiny.pth"
    torch.save({"state_dict": UnravelNet(stem_dim=32).state_dict()}, backbone)  # stands in for ImageNet
    code = main(
        [
            "train", "--preset", "unravelnet-t-dota10", "--dota", str(tmp_path / "dota"),
            "--backbone-weights", str(backbone), "--patch-size", "256", "--gap", "64",
            "--iterations", "1", "--batch-size", "1", "--out", str(tmp_path / "run"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "backbone: loaded" in out and "difficult: keep" in out
    _, meta = read_checkpoint(tmp_path / "run" / "latest.pth")
    cfg = meta["qgis_unravel_train"]["config"]
    assert meta["recipe"] == "unravelnet-t-dota10" and cfg["lr"] == 1.5e-4 and cfg["warmup_iters"] == 500
    assert len(meta["CLASSES"]) == 15


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_models_build(name):
    from qgis_unravel.training.model import build_model

    spec = dataclasses.replace(RECIPES[name].model, fpn_width=16, roi_fc_width=16)
    model = build_model(spec, ["a"])
    assert model.backbone.out_channels[0] == RECIPES[name].model.stem_dim
