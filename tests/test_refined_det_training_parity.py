"""One Refined-Det training step against the fork's ``RefinedDet.forward_train``.

Golden data: ``refined_det/train_step.npz`` (tests/golden/refined_det/README.md), made by
``reference/gen_refined_det.py`` with mmcv-full's compiled CPU ops: the reduced model's weights,
the configs' ``train_cfg`` (CLA, focal loss, smooth L1, no sampling), a batch of two 160x224
scenes with 10 oriented boxes each, the model in train mode (``norm_eval`` and
``frozen_stages=1``, as the configs). Nothing in the reference step is random, so nothing is
seeded or bypassed.

One thing is substituted: the rotated IoU matrices CLA assigns with. An object of a square-anchor
grid is often exactly as far (in exact arithmetic) from several anchors, and CLA makes *all* its
best-IoU anchors positive; mmcv's float32 IoU kernel and ours round those tied values
differently (by ~1e-7), so each picks a different subset of them. The step therefore runs with
the reference's IoU matrices (recorded per pass and image), and a separate test shows that with
our own IoU the assignments differ only at such ties.

Compared: the CLA assignment of both passes (exact), the pass-2 priors (the coarse boxes), every
loss term (1e-4 relative) and the gradients of sixteen parameters from layer2 to the alignment
convs (1e-3 of each parameter's largest gradient).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from typing import Dict, Iterator, Sequence, Tuple

import golden_data
import numpy as np
import pytest
import torch

import qgis_unravel.training.refined_det as refined
from qgis_unravel.detector.checkpoint import load_detector
from qgis_unravel.detector.preprocess import make_batch
from qgis_unravel.detector.refined_det import RefinedDet
from qgis_unravel.training.refined_det import CLAConfig, cla_assign, max_iou_step, refined_det_losses
from qgis_unravel.training.targets import rotated_overlaps

GOLDEN = golden_data.expanded() / "refined_det"
IMAGES = 2
LOSS_RTOL = 1e-4
LOSS_KEYS = ("base.loss_cls", "base.loss_bbox", "refine.loss_cls", "refine.loss_bbox")
CALLS = [(stage, i) for stage in ("base", "refine") for i in range(IMAGES)]  # the order CLA runs in


@contextmanager
def reference_overlaps(
    step: Dict[str, np.ndarray], calls: Sequence[Tuple[str, int]] = CALLS
) -> Iterator[None]:
    """CLA's IoU matrices are the reference's, in call order (checked against our own IoU)."""
    original = refined.rotated_overlaps
    order = iter(calls)

    def recorded(gts: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        stage, i = next(order)
        matrix = torch.from_numpy(step[f"{stage}_overlaps{i}"])
        assert (original(gts, boxes) - matrix).abs().max() < 1e-5, (stage, i)
        return matrix

    refined.rotated_overlaps = recorded
    try:
        yield
    finally:
        refined.rotated_overlaps = original


@pytest.fixture(scope="module")
def step():
    data = np.load(GOLDEN / "train_step.npz")
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def info():
    return json.loads((GOLDEN / "train_step_info.json").read_text())


@pytest.fixture(scope="module")
def batch(step, info):
    hw = tuple(info["image_hw"])
    images = make_batch([step["images_rgb_uint8"][i] for i in range(IMAGES)], hw, torch.device("cpu"))
    boxes = [torch.from_numpy(step[f"gt_boxes{i}"]) for i in range(IMAGES)]
    labels = [torch.from_numpy(step[f"gt_labels{i}"]) for i in range(IMAGES)]
    return images, boxes, labels


def configs_model() -> RefinedDet:
    """The golden checkpoint, set up for training as the configs are: stem and layer1 frozen,
    every BatchNorm on its running statistics."""
    model = load_detector(GOLDEN / "reduced_model.pth")
    assert isinstance(model, RefinedDet)
    model.backbone.frozen_stages, model.backbone.norm_eval = 1, True
    return model.train()


@pytest.fixture(scope="module")
def native_step(batch, step):
    """refined_det_losses and backward, as one trainer step does (no optimizer update)."""
    model = configs_model()
    images, boxes, labels = batch
    model.zero_grad()
    with reference_overlaps(step):
        losses = refined_det_losses(model, images, boxes, labels)
    sum(losses[k] for k in LOSS_KEYS).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    return {k: v.detach() for k, v in losses.items()}, grads, frozen


@pytest.fixture(scope="module")
def priors(batch):
    """Per image, the priors of both passes: the anchors and the (detached) coarse boxes."""
    model = configs_model()
    with torch.no_grad():
        feats = model.extract_feat(batch[0])
        out = model.head_outputs(feats)
    anchors = torch.cat(model.anchors(feats))
    sizes = [tuple(f.shape[-2:]) for f in feats]
    rois = torch.cat(out["rois"], dim=1)
    return {"base": [anchors] * IMAGES, "refine": list(rois)}, sizes


@pytest.mark.parametrize("key", LOSS_KEYS)
def test_loss_terms_match_the_reference(native_step, step, key):
    losses, _, _ = native_step
    ref = float(step[key])
    assert ref > 0
    assert abs(float(losses[key]) - ref) <= LOSS_RTOL * ref, (key, float(losses[key]), ref)


def test_total_loss_matches_the_reference(native_step, step):
    losses, _, _ = native_step
    total = sum(float(losses[k]) for k in LOSS_KEYS)
    assert math.isclose(total, float(step["loss_total"]), rel_tol=LOSS_RTOL)


def test_pass_two_priors_are_the_reference_coarse_boxes(priors, step):
    boxes, _ = priors
    for i in range(IMAGES):
        ref = torch.from_numpy(step[f"refine_priors{i}"])
        got = boxes["refine"][i]
        torch.testing.assert_close(got[:, :4], ref[:, :4], atol=1e-3, rtol=1e-5)
        da = (got[:, 4] - ref[:, 4] + math.pi / 2) % math.pi - math.pi / 2
        assert da.abs().max().item() < 1e-4


@pytest.mark.parametrize("stage", ["base", "refine"])
def test_cla_assignment_of_both_passes_matches(priors, batch, step, info, stage):
    boxes, sizes = priors
    _, gts, _ = batch
    for i in range(IMAGES):
        with reference_overlaps(step, calls=[(stage, i)]):
            assigned = cla_assign(boxes[stage][i], gts[i], sizes, tuple(info["image_hw"]))
        expected = torch.from_numpy(step[f"{stage}_assigned{i}"])
        assert (expected > 0).sum() >= 20
        assert torch.equal(assigned, expected), (stage, i)


def tied_best(overlaps: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Priors whose IoU with some object is within ``tol`` of that object's best IoU."""
    return ((overlaps - overlaps.max(dim=1, keepdim=True).values).abs() <= tol).any(dim=0)


@pytest.mark.parametrize("stage", ["base", "refine"])
def test_with_our_own_iou_only_tied_best_priors_differ(priors, batch, step, info, stage):
    """Our IoU (rounded differently from mmcv's kernel) changes the assignment only where
    the max-IoU step sees an object's best IoU tied between priors; the cross-grid cells those
    extra positives bring stay on the same objects' grid cells."""
    boxes, sizes = priors
    _, gts, _ = batch
    for i in range(IMAGES):
        ours = rotated_overlaps(gts[i], boxes[stage][i])
        reference = torch.from_numpy(step[f"{stage}_overlaps{i}"])
        assert (ours - reference).abs().max() < 1e-5
        plain_ours, _ = max_iou_step(ours, CLAConfig())
        plain_ref, _ = max_iou_step(reference.clone(), CLAConfig())
        differ = plain_ours != plain_ref
        assert not (differ & ~tied_best(ours)).any(), (stage, i)


def test_frozen_parameters_match_the_configs(native_step, info):
    _, grads, frozen = native_step
    assert len(frozen) == info["frozen_parameters"]
    assert all(name.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1.")) for name in frozen)
    assert not any(name in grads for name in frozen)


def test_gradients_match_the_reference(native_step, step):
    _, grads, _ = native_step
    names = [k[len("grad.") :] for k in step if k.startswith("grad.")]
    assert len(names) >= 12
    for name in names:
        ref = torch.from_numpy(step[f"grad.{name}"])
        scale = ref.abs().max().item()
        assert scale > 0, name
        err = (grads[name] - ref).abs().max().item()
        assert err <= 1e-3 * scale, (name, err, scale)
