"""Refined-Det against the project's own golden data (``tests/golden/refined_det``).

The data was made by ``reference/gen_refined_det.py`` with the public repository's two model files
on upstream mmrotate 0.3.4 / mmcv-full 1.7.2 (CPU ops). Each stage is checked twice: chained
(our own previous stage as input, as at run time) and isolated (the reference's previous stage as
input), so a mismatch points at the stage that causes it.
"""

from __future__ import annotations

import json
import math

import golden_data
import numpy as np
import pytest
import torch

from qgis_unravel.detector.backbones.resnet import ResNet, infer_config
from qgis_unravel.detector.checkpoint import build_detector, read_checkpoint
from qgis_unravel.detector.refined_det import RefinedDet
from qgis_unravel.detector.refined_det.checkpoint import build_from_state_dict
from qgis_unravel.detector.refined_det.head import fuse, gate_features
from qgis_unravel.ops import deform_conv2d

#: The golden folder with plain file names (the checkpoints are committed xz-compressed).
GOLDEN = golden_data.expanded() / "refined_det"
LEVELS = range(5)
FEAT_TOL = dict(atol=1e-4, rtol=1e-4)


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array))


def angle_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Difference of angles modulo pi, in (-pi/2, pi/2]."""
    d = (a - b) % math.pi
    return torch.where(d > math.pi / 2, d - math.pi, d)


def assert_boxes_close(boxes: torch.Tensor, expected: torch.Tensor, px: float = 1e-3) -> None:
    assert boxes.shape == expected.shape
    torch.testing.assert_close(boxes[:, :4], expected[:, :4], atol=px, rtol=1e-5)
    assert angle_diff(boxes[:, 4], expected[:, 4]).abs().max().item() < 1e-4


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "reduced_model_io.npz")


@pytest.fixture(scope="module")
def info():
    return json.loads((GOLDEN / "info.json").read_text())


@pytest.fixture(scope="module")
def model(info) -> RefinedDet:
    sd, meta = read_checkpoint(GOLDEN / "reduced_model.pth")
    detector = build_detector(sd, meta)
    assert isinstance(detector, RefinedDet)
    detector.nms_pre = info["nms_pre"]
    detector.test_cfg.score_thr = info["score_thr"]
    return detector


@pytest.fixture(scope="module")
def stages(model, golden):
    return model.run_stages(t(golden["input"])[None])


def test_architecture_is_read_from_the_checkpoint(model, info):
    assert model.info["backbone"] == "ResNet" and model.info["depth"] == 18
    assert model.info["start_level"] == 1
    # the config says stacked_convs=2, the reference's constructor builds 4: the checkpoint decides
    assert info["stacked_convs_config"] == 2
    assert model.bbox_head.stacked_convs == info["stacked_convs_built"] == 4
    assert model.classes[0] == "plane" and len(model.classes) == 15


def test_deform_conv_matches_mmcv():
    data = np.load(GOLDEN / "op_deform_conv.npz")
    out = deform_conv2d(t(data["input"]), t(data["offset"]), t(data["weight"]), padding=1)
    torch.testing.assert_close(out, t(data["output"]), atol=1e-5, rtol=1e-5)
    chunked = deform_conv2d(
        t(data["input"]), t(data["offset"]), t(data["weight"]), padding=1, chunk_elements=500
    )
    torch.testing.assert_close(chunked, t(data["output"]), atol=1e-5, rtol=1e-5)


def test_resnet50_bottleneck_backbone_matches_mmdet():
    sd = torch.load(GOLDEN / "resnet50_backbone.pth", map_location="cpu", weights_only=True)["state_dict"]
    config = infer_config(sd, "")
    assert config == {"depth": 50, "base_channels": 4}
    backbone = ResNet(**config).eval()
    backbone.load_state_dict(sd, strict=True)
    data = np.load(GOLDEN / "resnet50_io.npz")
    with torch.no_grad():
        outs = backbone(t(data["input"])[None])
    for i, out in enumerate(outs):
        torch.testing.assert_close(out[0], t(data[f"out{i}"]), **FEAT_TOL)


@pytest.mark.parametrize("depth", [50, 101])
def test_full_size_keys_shapes_and_parameter_counts(depth, info):
    lines = (GOLDEN / f"state_dict_keys_r{depth}.txt").read_text().splitlines()
    shapes = {}
    for line in lines:
        key, shape, dtype = line.split("\t")
        shapes[key] = torch.empty(json.loads(shape), dtype=getattr(torch, dtype), device="meta")
    with torch.device("meta"):
        detector = build_from_state_dict(shapes)
    ours = {k: tuple(v.shape) for k, v in detector.state_dict().items()}
    assert list(ours) == list(shapes)
    assert ours == {k: tuple(v.shape) for k, v in shapes.items()}
    assert detector.bbox_head.stacked_convs == info[f"stacked_convs_built_r{depth}"]
    counts = info[f"parameters_r{depth}"]
    for part in ("backbone", "neck", "bbox_head", "align_conv"):
        assert sum(p.numel() for p in getattr(detector, part).parameters()) == counts[part]
    assert sum(p.numel() for p in detector.parameters()) == counts["total"]


def test_backbone_and_fpn_match(stages, golden, model):
    with torch.no_grad():
        backbone = model.backbone(t(golden["input"])[None])
    for i, out in enumerate(backbone):
        torch.testing.assert_close(out[0], t(golden[f"backbone_out{i}"]), **FEAT_TOL)
    for lvl in LEVELS:
        torch.testing.assert_close(stages["features"][lvl][0], t(golden[f"fpn_out{lvl}"]), **FEAT_TOL)


def test_head_pass_one_matches(stages, golden):
    for lvl in LEVELS:
        for ours, name in (
            ("coarse_cls", "coarse_cls"),
            ("coarse_reg", "coarse_reg"),
            ("refine_cls", "refine_cls"),
            ("refine_reg", "refine_reg"),
            ("gates", "gate"),
        ):
            torch.testing.assert_close(stages[ours][lvl][0], t(golden[f"{name}_l{lvl}"]), **FEAT_TOL)


def test_coarse_boxes_match(stages, golden, model):
    for lvl in LEVELS:
        assert_boxes_close(stages["rois"][lvl][0], t(golden[f"rois_l{lvl}"]))
        # isolated: the reference's deltas decoded on our anchors
        isolated = model.coarse_boxes(
            [model.anchors(stages["features"])[lvl]], [t(golden[f"coarse_reg_l{lvl}"])[None]]
        )
        assert_boxes_close(isolated[0][0], t(golden[f"rois_l{lvl}"]), px=1e-4)


def test_alignment_conv_matches(stages, golden, model):
    for lvl in LEVELS:
        torch.testing.assert_close(stages["aligned"][lvl][0], t(golden[f"aligned_l{lvl}"]), **FEAT_TOL)
    gated = gate_features(
        [t(golden[f"fpn_out{i}"])[None] for i in LEVELS], [t(golden[f"gate_l{i}"])[None] for i in LEVELS]
    )
    with torch.no_grad():
        isolated = model.align_conv(gated, [t(golden[f"rois_l{i}"])[None] for i in LEVELS])
    for lvl in LEVELS:
        torch.testing.assert_close(isolated[lvl][0], t(golden[f"aligned_l{lvl}"]), atol=1e-5, rtol=1e-5)


def test_head_pass_two_and_fusion_match(stages, golden, model):
    for lvl in LEVELS:
        torch.testing.assert_close(stages["cls_score"][lvl][0], t(golden[f"cls_score_l{lvl}"]), **FEAT_TOL)
        torch.testing.assert_close(stages["bbox_pred"][lvl][0], t(golden[f"bbox_pred_l{lvl}"]), **FEAT_TOL)
    with torch.no_grad():
        cls2, reg2 = model.bbox_head.coarse([t(golden[f"aligned_l{i}"])[None] for i in LEVELS])
    fused = fuse(cls2, [t(golden[f"refine_cls_l{i}"])[None] for i in LEVELS])
    for lvl in LEVELS:
        torch.testing.assert_close(fused[lvl][0], t(golden[f"cls_score_l{lvl}"]), atol=1e-5, rtol=1e-5)


def test_detections_match_end_to_end(stages, golden):
    boxes, scores, labels = stages["detections"][0]
    expected = t(golden["det_bboxes"])
    assert len(expected) > 20
    assert_boxes_close(boxes, expected[:, :5])
    torch.testing.assert_close(scores, expected[:, 5], atol=1e-5, rtol=1e-5)
    assert torch.equal(labels, t(golden["det_labels"]))


def test_postprocess_alone_matches(golden, model):
    """The reference's fused outputs and coarse boxes through our top-k, decode and NMS."""
    dets = model.postprocess(
        [t(golden[f"cls_score_l{i}"]) for i in LEVELS],
        [t(golden[f"bbox_pred_l{i}"]) for i in LEVELS],
        [t(golden[f"rois_l{i}"]) for i in LEVELS],
        tuple(golden["input"].shape[-2:]),
    )
    expected = t(golden["det_bboxes"])
    assert_boxes_close(dets[0], expected[:, :5], px=1e-4)
    assert torch.equal(dets[2], t(golden["det_labels"]))


def test_predict_on_the_uint8_image_matches(golden, model):
    """The user path: a non-square RGB image, normalised and batched by predict()."""
    out = model.predict([golden["image_rgb_uint8"]])[0]
    expected = golden["det_bboxes"]
    assert_boxes_close(t(out["boxes"]), t(expected[:, :5]))
    np.testing.assert_allclose(out["scores"], expected[:, 5], atol=1e-5)
    np.testing.assert_array_equal(out["labels"], golden["det_labels"])
