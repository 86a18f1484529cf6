"""Checkpoint loading: formats accepted, architectures refused, errors that say what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qgis_unravel.detector.checkpoint import CheckpointError, load_detector, save_checkpoint
from qgis_unravel.detector.config import DOTA_V1_CLASSES
from qgis_unravel.detector.oriented_rcnn import OrientedRCNN
from qgis_unravel.detector.state_dict import strip_prefix


@pytest.fixture(scope="module")
def reduced(golden_dir):
    ckpt = torch.load(golden_dir / "reduced_model.pth", map_location="cpu", weights_only=True)
    return ckpt["state_dict"], ckpt["meta"]


def save(obj, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_official_checkpoint_loads_with_meta_classes(golden_dir, reduced):
    sd, meta = reduced
    det = load_detector(golden_dir / "reduced_model.pth")
    assert isinstance(det, OrientedRCNN) and not det.training
    assert det.classes == list(meta["CLASSES"])
    assert det.info["backbone"] == "UnravelNet"
    assert det.info["stem_width"] == 16 and det.info["depths"] == [1, 2, 2, 1]
    assert det.info["fpn_width"] == 64 and det.info["roi_fc_width"] == 128 and det.info["num_classes"] == 15
    loaded = det.state_dict()
    assert set(loaded) == set(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_top_level_load_detector_forwards(golden_dir):
    import qgis_unravel

    det = qgis_unravel.load_detector(golden_dir / "reduced_model.pth")
    assert isinstance(det, OrientedRCNN)


def test_legnet_checkpoint_loads(golden_dir):
    det = load_detector(golden_dir / "legnet" / "legnet_reduced_model.pth")
    assert det.info["backbone"] == "LEGNet" and det.requires_square is False
    assert det.info["depths"] == [1, 2, 2, 1]


def test_bare_state_dict_gets_default_dota_names(tmp_path, reduced):
    sd, _ = reduced
    det = load_detector(save(dict(sd), tmp_path))
    assert det.classes == list(DOTA_V1_CLASSES)


def test_module_prefix_is_stripped(tmp_path, reduced):
    sd, meta = reduced
    wrapped = {"meta": meta, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    det = load_detector(save(wrapped, tmp_path))
    assert torch.equal(det.state_dict()["rpn_head.rpn_reg.bias"], sd["rpn_head.rpn_reg.bias"])


def test_other_class_count_gets_generic_names(tmp_path, reduced):
    sd, _ = reduced
    sd = dict(sd)
    sd["roi_head.bbox_head.fc_cls.weight"] = sd["roi_head.bbox_head.fc_cls.weight"][:5].clone()
    sd["roi_head.bbox_head.fc_cls.bias"] = sd["roi_head.bbox_head.fc_cls.bias"][:5].clone()
    det = load_detector(save(sd, tmp_path))
    assert det.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert det.info["num_classes"] == 4


def test_missing_head_key_is_named(tmp_path, reduced):
    sd, _ = reduced
    sd = {k: v for k, v in sd.items() if k != "roi_head.bbox_head.shared_fcs.1.bias"}
    with pytest.raises(CheckpointError, match="shared_fcs.1.bias"):
        load_detector(save(sd, tmp_path))


def test_missing_backbone_key_is_refused(tmp_path, reduced):
    sd, _ = reduced
    victim = next(k for k in sd if k.startswith("backbone.stages.2.blocks.1."))
    sd = {k: v for k, v in sd.items() if k != victim}
    with pytest.raises(CheckpointError, match="missing"):
        load_detector(save(sd, tmp_path))


def test_unexpected_key_is_named(tmp_path, reduced):
    sd, _ = reduced
    sd = dict(sd)
    sd["rpn_head.extra_conv.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unexpected.*extra_conv"):
        load_detector(save(sd, tmp_path))


def test_resnet_backbone_is_refused(tmp_path, reduced):
    sd, _ = reduced
    heads = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
    heads["backbone.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    heads["backbone.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(CheckpointError, match="ResNet.*supported is"):
        load_detector(save(heads, tmp_path))


def test_retinanet_is_refused(tmp_path, reduced):
    sd, _ = reduced
    single = {k: v for k, v in sd.items() if k.startswith(("backbone.", "neck."))}
    single["bbox_head.retina_cls.weight"] = torch.zeros(135, 256, 3, 3)
    single["bbox_head.retina_reg.weight"] = torch.zeros(45, 256, 3, 3)
    with pytest.raises(CheckpointError, match="RetinaNet"):
        load_detector(save(single, tmp_path))


def test_backbone_only_file_is_refused(tmp_path, reduced):
    sd, _ = reduced
    cls_only = strip_prefix(sd, "backbone.")
    cls_only["head.fc.weight"] = torch.zeros(1000, 128)
    with pytest.raises(CheckpointError, match="backbone-only"):
        load_detector(save(cls_only, tmp_path))


def test_horizontal_rpn_is_refused(tmp_path, reduced):
    sd, _ = reduced
    sd = dict(sd)
    sd["rpn_head.rpn_reg.weight"] = torch.zeros(12, 64, 1, 1)
    sd["rpn_head.rpn_reg.bias"] = torch.zeros(12)
    with pytest.raises(CheckpointError, match="horizontal"):
        load_detector(save(sd, tmp_path))


def test_file_needing_code_is_refused_without_running_it(tmp_path):
    path = save(nn.Linear(2, 2), tmp_path)
    with pytest.raises(CheckpointError, match="Python code.*torch.nn.modules.linear.Linear"):
        load_detector(path)


def test_numpy_values_in_meta_are_accepted(tmp_path, reduced):
    """mmcv hook messages can leave numpy scalars/arrays in meta; they hold no code."""
    sd, meta = reduced
    meta = dict(meta, hook_msgs={"best_score": np.float64(0.7), "curve": np.arange(3)})
    det = load_detector(save({"meta": meta, "state_dict": sd}, tmp_path))
    assert det.classes == list(meta["CLASSES"])


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_detector(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError):
        load_detector(junk)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_detector(save({"epoch": 3}, tmp_path))


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_save_checkpoint_round_trip(tmp_path, golden_dir):
    det = load_detector(golden_dir / "reduced_model.pth")
    det.classes = [f"thing{i}" for i in range(15)]
    path = tmp_path / "out" / "model.pth"
    save_checkpoint(det, path, {"note": "trained here"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"meta", "state_dict"}
    assert raw["meta"]["note"] == "trained here"
    back = load_detector(path)
    assert back.classes == det.classes
    ref = det.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())
    assert np.isfinite(sum(float(v.float().sum()) for v in ref.values()))
