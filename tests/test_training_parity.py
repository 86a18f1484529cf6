"""One training step of the reduced UnravelNet Oriented R-CNN against mmrotate's forward_train.

Golden data: ``training/train_step.npz`` (docs/golden.md). Same weights, same batch (two
synthetic scenes with their oriented boxes and labels), drop-path off. mmdet's samplers pick
at random; the generator replaced their ``random_choice`` by "the first ``num`` candidates",
and these tests apply the same rule to ``qgis_unravel.training.assign`` so both sides sample
the same anchors and RoIs. What is compared: the RPN's sampled anchors and their targets, the
training proposals, the sampled RoIs with labels and targets, every loss term (1e-4 relative)
and the gradients of a few parameters.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import golden_data
import numpy as np
import pytest
import torch

from qgis_unravel.detector.checkpoint import load_detector
from qgis_unravel.detector.preprocess import make_batch
from qgis_unravel.training import assign
from qgis_unravel.training.proposals import training_proposals
from qgis_unravel.training.targets import rpn_targets_single, sample_rois
from qgis_unravel.training.trainer import LOSS_KEYS, forward_losses

IMAGES = 2
LOSS_RTOL = 1e-4


@contextmanager
def first_candidates():
    """The generator's sampling rule: keep the first ``num`` candidates in index order."""
    original = assign._random_subset
    assign._random_subset = lambda inds, num, generator: inds[:num]
    try:
        yield
    finally:
        assign._random_subset = original


@pytest.fixture(scope="module")
def step(golden_dir):
    data = np.load(golden_dir / "training" / "train_step.npz")
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def batch(step):
    images = [step["images_rgb_uint8"][i] for i in range(IMAGES)]
    boxes = [torch.from_numpy(step[f"gt_boxes{i}"]) for i in range(IMAGES)]
    labels = [torch.from_numpy(step[f"gt_labels{i}"]) for i in range(IMAGES)]
    return make_batch(images, (256, 256), torch.device("cpu")), boxes, labels


@pytest.fixture(scope="module")
def model(golden_dir):
    det = load_detector(golden_dir / "reduced_model.pth")
    for module in det.modules():  # the golden step ran with drop-path rate 0
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0
    return det.train()


@pytest.fixture(scope="module")
def native_step(model, batch):
    """forward_losses and backward, as one trainer step does (no optimizer update)."""
    images, boxes, labels = batch
    model.zero_grad()
    with first_candidates():
        losses = forward_losses(model, images, boxes, labels)
    sum(losses[k] for k in LOSS_KEYS).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.fixture(scope="module")
def rpn_maps(model, batch):
    images = batch[0]
    with torch.no_grad():
        feats = model.extract_feat(images)
        cls_scores, bbox_preds = model.rpn_head(feats)
    return feats, cls_scores, bbox_preds


@pytest.mark.parametrize("key", LOSS_KEYS)
def test_loss_terms_match_mmrotate(native_step, step, key):
    losses, _ = native_step
    ref = float(step[key])
    assert ref > 0
    assert abs(float(losses[key]) - ref) <= LOSS_RTOL * abs(ref), (key, float(losses[key]), ref)


def test_total_loss_and_accuracy_match_mmrotate(native_step, step):
    losses, _ = native_step
    total = sum(float(losses[k]) for k in LOSS_KEYS)
    assert math.isclose(total, float(step["loss_total"]), rel_tol=LOSS_RTOL)
    assert abs(float(losses["acc"]) - float(step["acc"])) < 1e-3


def test_rpn_samples_and_targets_match_mmrotate(model, rpn_maps, batch, step):
    _, cls_scores, _ = rpn_maps
    _, boxes, _ = batch
    anchors = torch.cat(model.rpn_head.anchors(cls_scores))
    for i in range(IMAGES):
        with first_candidates():
            targets = rpn_targets_single(anchors, boxes[i], (256, 256), model.rpn_head.bbox_coder)
        pos = torch.nonzero(targets.labels > 0).flatten()
        sampled = torch.nonzero(targets.label_weights > 0).flatten()
        neg = sampled[targets.labels[sampled] == 0]
        assert pos.numel() > 0
        np.testing.assert_array_equal(pos.numpy(), step[f"rpn_pos_inds{i}"])
        np.testing.assert_array_equal(neg.numpy(), np.sort(step[f"rpn_neg_inds{i}"]))
        assert targets.num_samples == int(step[f"rpn_label_weight_sum{i}"])
        torch.testing.assert_close(
            targets.bbox_targets[pos], torch.from_numpy(step[f"rpn_pos_targets{i}"]), atol=1e-4, rtol=1e-4
        )


def test_training_proposals_match_mmrotate(model, rpn_maps, step):
    """As a set: proposals whose scores tie to float precision may swap places in the order."""
    _, cls_scores, bbox_preds = rpn_maps
    proposals = training_proposals(model.rpn_head, cls_scores, bbox_preds)
    for i in range(IMAGES):
        ref = torch.from_numpy(step[f"proposals{i}"])
        got = proposals[i]
        assert got.shape == ref.shape
        nearest = torch.cdist(ref[:, :4].double(), got[:, :4].double()).argmin(dim=1)
        assert len(set(nearest.tolist())) == ref.shape[0]
        torch.testing.assert_close(got[nearest, :4], ref[:, :4], atol=1e-3, rtol=1e-5)
        da = (got[nearest, 4] - ref[:, 4] + math.pi / 2) % math.pi - math.pi / 2
        assert da.abs().max().item() < 1e-4
        torch.testing.assert_close(got[nearest, 5], ref[:, 5], atol=2e-5, rtol=0)
        torch.testing.assert_close(got[:, 5], ref[:, 5], atol=2e-5, rtol=0)  # same order of scores


def test_sampled_rois_labels_and_targets_match_mmrotate(model, batch, step):
    _, boxes, labels = batch
    proposals = [torch.from_numpy(step[f"proposals{i}"]) for i in range(IMAGES)]
    with first_candidates():
        samples = sample_rois(
            proposals, boxes, labels, model.roi_head.num_classes, model.roi_head.bbox_coder
        )
    rois = torch.cat([s.rois for s in samples])
    ref_rois = torch.from_numpy(step["rois"])
    assert rois.shape == ref_rois.shape
    torch.testing.assert_close(rois, ref_rois, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(torch.cat([s.labels for s in samples]).numpy(), step["roi_labels"])
    targets = torch.cat([s.bbox_targets for s in samples])
    torch.testing.assert_close(targets, torch.from_numpy(step["roi_bbox_targets"]), atol=1e-4, rtol=1e-4)
    for i, s in enumerate(samples):
        assert s.num_pos == len(step[f"roi_pos_inds{i}"]) > 0


def test_gradients_match_mmrotate(native_step, step):
    _, grads = native_step
    names = [k[len("grad.") :] for k in golden_data.array_names(step, "grad.")]
    assert len(names) >= 6
    for name in names:
        got, ref = golden_data.compared(grads[name], step, f"grad.{name}")
        scale = ref.abs().max().item()
        assert scale > 0, name
        err = (got - ref).abs().max().item()
        assert err <= 1e-3 * scale, (name, err, scale)
