"""Public detector API: full-size architectures, settings, predict() on arbitrary images, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qgis_unravel.detector.checkpoint import build_detector, load_detector
from qgis_unravel.detector.config import Thresholds
from qgis_unravel.detector.oriented_rcnn import OrientedRCNN
from qgis_unravel.detector.preprocess import make_batch, padded_size

# (key list, parameters() count from the golden README)
FULL_SIZE = {
    "unravelnet_tiny": ("state_dict_keys_tiny.txt", 26_676_067),
    "legnet_tiny": ("legnet/state_dict_keys_legnet_tiny.txt", 20_651_935),
}


def read_key_list(path):
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        shapes[key] = (dims, dtype)
    return shapes


def small_settings(det: OrientedRCNN) -> OrientedRCNN:
    """Random weights: a high threshold keeps NMS small, fewer proposals keep the test fast."""
    det.roi_head.test_cfg.score_thr = 0.15
    det.rpn_nms_pre = 500
    det.rpn_max_proposals = 300
    return det


@pytest.fixture(scope="module")
def unravel(golden_dir):
    return small_settings(load_detector(golden_dir / "reduced_model.pth"))


@pytest.fixture(scope="module")
def legnet(golden_dir):
    return small_settings(load_detector(golden_dir / "legnet" / "legnet_reduced_model.pth"))


@pytest.fixture(scope="module")
def scene(golden_dir):
    """The golden synthetic scene (rotated rectangles): crops of it give detections even with
    random weights, so the checks below are not vacuous."""
    return np.load(golden_dir / "reduced_model_io.npz")["image_rgb_uint8"]


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_build_has_mmrotate_keys_and_shapes(golden_dir, name):
    """Built from the shapes of the official key list only (no weights, no forward)."""
    key_file, n_params = FULL_SIZE[name]
    listed = read_key_list(golden_dir / key_file)
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    fake = {k: torch.zeros(dims, dtype=dtypes[dt]) for k, (dims, dt) in listed.items()}
    det = build_detector(fake, load=False)
    built = {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in det.state_dict().items()}
    assert built == listed
    assert sum(p.numel() for p in det.parameters()) == n_params
    assert det.info["fpn_width"] == 256 and det.info["roi_fc_width"] == 1024
    assert det.info["stem_width"] == 32 and det.info["num_classes"] == 15


def test_default_settings_follow_the_configs(unravel):
    fresh = OrientedRCNN.from_parts(
        unravel.backbone, unravel.neck, num_classes=3, fpn_width=64, roi_fc_width=128
    )
    assert fresh.classes == ["class_0", "class_1", "class_2"]
    assert fresh.default_thresholds == Thresholds(score=0.05, nms_iou=0.1, max_detections=2000)
    assert fresh.rpn_nms_pre == 2000 and fresh.rpn_nms_iou == 0.8 and fresh.rpn_max_proposals == 2000
    assert not hasattr(type(fresh), "score_threshold")  # run thresholds go per call, never on the model


def test_info_describes_the_model(unravel, legnet):
    assert unravel.info["backbone"] == "UnravelNet" and unravel.requires_square
    assert legnet.info["backbone"] == "LEGNet" and not legnet.requires_square
    for det in (unravel, legnet):
        assert det.info["depths"] == [1, 2, 2, 1] and det.info["num_classes"] == len(det.classes)


def test_forward_returns_sorted_dicts_per_image(unravel, scene):
    crops = [scene[:96, :96], scene[100:196, 50:146]]
    outs = unravel(make_batch(crops, (96, 96), torch.device("cpu")))
    assert len(outs) == 2
    for out in outs:
        assert set(out) == {"boxes", "scores", "labels"}
        n = out["boxes"].shape[0]
        assert n > 0
        assert out["boxes"].shape == (n, 5) and out["scores"].shape == (n,) and out["labels"].shape == (n,)
        assert (out["scores"][1:] <= out["scores"][:-1]).all()
        assert (out["boxes"][:, 2] >= out["boxes"][:, 3]).all()
        assert (out["scores"] > unravel.default_thresholds.score).all()


def test_predict_pads_to_a_square_for_unravelnet(unravel, scene):
    img = scene[:70, :45]
    assert padded_size(70, 45, square=True) == (96, 96)
    (out,) = unravel.predict([img])
    (ref,) = unravel(make_batch([img], (96, 96), torch.device("cpu")), [(70, 45)])
    assert out["boxes"].shape[0] > 0
    np.testing.assert_array_equal(out["boxes"], ref["boxes"].numpy())
    np.testing.assert_array_equal(out["labels"], ref["labels"].numpy())
    # centres are clamped to the real image, not the padding
    assert (out["boxes"][:, 0] <= 44).all() and (out["boxes"][:, 1] <= 69).all()


def test_predict_keeps_non_square_inputs_for_legnet(legnet, scene):
    img = scene[:40, :90]
    assert padded_size(40, 90, square=False) == (64, 96)
    (out,) = legnet.predict([img])
    (ref,) = legnet(make_batch([img], (64, 96), torch.device("cpu")), [(40, 90)])
    assert out["scores"].shape[0] > 0
    np.testing.assert_array_equal(out["scores"], ref["scores"].numpy())


def test_predict_returns_results_in_input_order(legnet, scene):
    a, b = scene[:64, :64], scene[120:152, 100:196]
    outs = legnet.predict([a, b, a], batch_size=2)
    assert len(outs) == 3
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_allclose(outs[0][key], outs[2][key], atol=1e-4)
    (alone,) = legnet.predict([b])
    np.testing.assert_allclose(outs[1]["scores"], alone["scores"], atol=1e-5)
    assert outs[0]["scores"].shape[0] > 0 and outs[1]["scores"].shape[0] > 0
    assert outs[0]["scores"].shape != outs[1]["scores"].shape or not np.allclose(
        outs[0]["scores"], outs[1]["scores"]
    )
    assert legnet.predict([]) == []


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((32, 32, 4), np.uint8), "shape"),
        (np.zeros((32, 32), np.uint8), "shape"),
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_predict_rejects_bad_images(unravel, bad, message):
    with pytest.raises(ValueError, match=message):
        unravel.predict([bad])


def test_predict_wants_a_list(unravel):
    with pytest.raises(ValueError, match="list"):
        unravel.predict(np.zeros((32, 32, 3), np.uint8))


def test_forward_rejects_bad_batches(unravel, legnet):
    with pytest.raises(ValueError, match="multiple of 32"):
        legnet(torch.zeros(1, 3, 50, 64))
    with pytest.raises(ValueError, match="square"):
        unravel(torch.zeros(1, 3, 96, 128))
    with pytest.raises(ValueError, match="channels"):
        legnet(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        legnet(torch.zeros(3, 32, 32))


def test_normalisation_is_per_call_and_follows_the_channel_order(scene):
    from qgis_unravel.detector.config import Normalization

    crop = np.ascontiguousarray(scene[:64, :64])
    rgb = make_batch([crop], (64, 64), torch.device("cpu"))
    bgr = make_batch([crop], (64, 64), torch.device("cpu"),
                     Normalization(mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395),
                                   channel_order="BGR"))
    assert torch.allclose(bgr, rgb.flip(1))  # same statistics, channels reversed
    plain = make_batch([crop], (64, 64), torch.device("cpu"), Normalization((0.0,) * 3, (1.0,) * 3))
    assert torch.equal(plain[0], torch.from_numpy(crop).permute(2, 0, 1).float())


def test_thresholds_cannot_be_set_on_the_model(unravel):
    # They apply per call; a write would create an attribute nothing reads (a bench once did).
    with pytest.raises(AttributeError, match="per call"):
        unravel.score_threshold = 0.5
    with pytest.raises(AttributeError, match="per call"):
        unravel.nms_iou = 0.5
    with pytest.raises(AttributeError, match="prepare_for_inference"):
        unravel.fast = True  # the switch is gone: folding happens once, at load
