"""Starting points for training: a fresh model, an official detector checkpoint with its classes
remapped, or ImageNet backbone weights; and saving in mmrotate's format."""

from __future__ import annotations

import pytest
import torch

from qgis_unravel.detector.state_dict import strip_prefix
from qgis_unravel.training.model import PRESETS, build_model, from_detector_checkpoint, load_backbone


def test_fresh_model_has_the_classes_and_mmdet_head_init():
    model = build_model(PRESETS["pico"], ["a", "b"])
    assert model.classes == ["a", "b"] and model.roi_head.num_classes == 2
    head = model.roi_head.bbox_head
    assert (
        float(head.fc_reg.weight.detach().std()) < 0.002 and float(head.fc_cls.weight.detach().std()) < 0.02
    )
    assert float(model.rpn_head.rpn_cls.bias.detach().abs().max()) == 0.0


def test_official_checkpoint_classes_are_remapped_by_name(golden_dir, tmp_path):
    from qgis_unravel import load_detector
    from qgis_unravel.detector.checkpoint import read_checkpoint, save_checkpoint

    path = golden_dir / "reduced_model.pth"
    sd, meta = read_checkpoint(path)
    old = list(meta["CLASSES"])
    model, fresh = from_detector_checkpoint(path, ["ship", "plane", "my-thing"])
    assert fresh == ["my-thing"]
    w = model.roi_head.bbox_head.fc_cls.weight
    old_w = sd["roi_head.bbox_head.fc_cls.weight"]
    assert torch.equal(w[0], old_w[old.index("ship")]) and torch.equal(w[1], old_w[old.index("plane")])
    assert torch.equal(w[3], old_w[-1])  # background row kept
    assert w.shape[0] == 4 and model.roi_head.num_classes == 3
    # Everything else is the checkpoint's.
    assert torch.equal(model.state_dict()["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.weight"])
    save_checkpoint(model, tmp_path / "remapped.pth")
    again = load_detector(tmp_path / "remapped.pth")
    assert again.classes == ["ship", "plane", "my-thing"]


def test_backbone_weights_load_and_misfits_are_refused(golden_dir, tmp_path):
    from qgis_unravel.detector.checkpoint import read_checkpoint

    sd, _ = read_checkpoint(golden_dir / "reduced_model.pth")
    backbone = strip_prefix(sd, "backbone.")
    backbone["head.weight"] = torch.zeros(1000, 128)  # an ImageNet classifier, skipped
    torch.save({"state_dict": backbone}, tmp_path / "imagenet.pth")
    model = build_model(PRESETS["nano"], ["a"])
    loaded, total = load_backbone(model, tmp_path / "imagenet.pth")
    assert loaded == total
    key = "norm0.weight"
    assert torch.equal(model.backbone.state_dict()[key], backbone[key])
    narrow = build_model(PRESETS["pico"], ["a"])
    with pytest.raises(ValueError, match="does not fit this backbone"):
        load_backbone(narrow, tmp_path / "imagenet.pth")
