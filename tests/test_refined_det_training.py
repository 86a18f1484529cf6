"""Refined-Det training: CLA on hand-made cases, losses, one optimiser step, the train command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from qgis_unravel.training.model import REFINED_DET_PRESETS, build_refined_det
from qgis_unravel.training.refined_det import (
    cla_assign,
    cross_grid_cells,
    focal_loss,
    points_in_polygons,
    refined_det_losses,
)


def test_points_in_polygons_is_inclusive_and_rotation_aware():
    square = torch.tensor([[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]])
    diamond = torch.tensor([[5.0, 0.0, 10.0, 5.0, 5.0, 10.0, 0.0, 5.0]])
    points = torch.tensor([[5.0, 5.0], [0.0, 0.0], [1.0, 1.0], [11.0, 5.0]])
    inside = points_in_polygons(points, torch.cat([square, diamond]))
    assert inside.tolist() == [[True, True], [True, False], [True, False], [False, False]]


def test_cross_grid_adds_the_nearer_neighbours_inside_the_object():
    # stride 8 on a 64x64 input: an axis-aligned 40x40 box centred at (27, 27) -> grid (3.375, 3.375):
    # fractions < 0.5 so the left and upper neighbours are candidates besides the centre cell
    box = torch.tensor([[27.0, 27.0, 40.0, 40.0, 0.0]])
    cells = sorted(cross_grid_cells(box, 8, (8, 8), (64, 64)).tolist())
    # centre (3, 3), left (2, 3), up (3, 2): all their grid points (x*8, y*8) lie inside the box
    assert cells == sorted([3 * 8 + 3, 3 * 8 + 2, 2 * 8 + 3])
    # a centre with fractions > 0.5 takes the right and lower neighbours instead
    box = torch.tensor([[29.0, 29.0, 40.0, 40.0, 0.0]])  # grid 3.625
    assert sorted(cross_grid_cells(box, 8, (8, 8), (64, 64)).tolist()) == sorted([27, 28, 35])
    # a thin box the neighbours' grid points miss: only cells whose point is inside survive
    thin = torch.tensor([[27.0, 24.0, 40.0, 2.0, 0.0]])
    assert sorted(set(cross_grid_cells(thin, 8, (8, 8), (64, 64)).tolist())) == [3 * 8 + 2, 3 * 8 + 3]


def test_cla_makes_cross_grid_cells_positive_for_their_best_object():
    strides = (8, 16)
    sizes = [(8, 8), (4, 4)]
    anchors = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
        n = h * w
        anchors.append(
            torch.stack(
                [
                    xs.reshape(-1),
                    ys.reshape(-1),
                    torch.full((n,), 4.0 * s),
                    torch.full((n,), 4.0 * s),
                    torch.zeros(n),
                ],
                dim=1,
            ).float()
        )
    boxes = torch.cat(anchors)
    gt = torch.tensor([[27.0, 27.0, 32.0, 32.0, 0.0]])
    assigned = cla_assign(boxes, gt, sizes, (64, 64), strides)
    # the max-IoU step alone: the exact-match anchor at (24, 24)/(32, 32)...
    from qgis_unravel.training.refined_det import CLAConfig, max_iou_step
    from qgis_unravel.training.targets import rotated_overlaps

    plain, _ = max_iou_step(rotated_overlaps(gt, boxes), CLAConfig())
    assert (assigned >= plain).all()  # CLA only adds positives
    added = torch.nonzero((assigned == 1) & (plain != 1)).flatten().tolist()
    assert added, "the cross-grid step should add neighbouring cells"
    assert all(i < 64 for i in added)  # on the level that held the positives
    assert set(added) <= {3 * 8 + 3, 3 * 8 + 2, 2 * 8 + 3}
    assert cla_assign(boxes, gt[:0], sizes, (64, 64), strides).eq(0).all()


def test_focal_loss_matches_its_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([0, 2])  # second row: background
    loss = focal_loss(logits, labels, torch.ones(2), avg_factor=1.0)
    p = torch.sigmoid(logits)
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    weight = torch.where(t > 0, 0.25 * (1 - p) ** 2, 0.75 * p**2)
    torch.testing.assert_close(loss, (bce * weight).sum())


def test_losses_of_both_passes_are_finite_and_train():
    torch.manual_seed(0)
    model = build_refined_det(REFINED_DET_PRESETS["pico"], ["a", "b"]).train()
    batch = torch.randn(2, 3, 128, 128)
    gts = [torch.tensor([[60.0, 50.0, 48.0, 16.0, 0.3]]), torch.tensor([[64.0, 64.0, 80.0, 30.0, 1.0]])]
    labels = [torch.tensor([0]), torch.tensor([1])]
    losses = refined_det_losses(model, batch, gts, labels)
    assert set(losses) == {"base.loss_cls", "base.loss_bbox", "refine.loss_cls", "refine.loss_bbox"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    # a few Adam steps on the same batch lower pass 1's loss (its priors, the anchors, are fixed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = losses["base.loss_cls"] + losses["base.loss_bbox"]
    for _ in range(4):
        optimizer.zero_grad()
        sum(refined_det_losses(model, batch, gts, labels).values()).backward()
        optimizer.step()
    assert model.align_conv.ac[0].deform_conv.weight.grad.abs().sum() > 0
    after = refined_det_losses(model, batch, gts, labels)
    assert after["base.loss_cls"] + after["base.loss_bbox"] < before


def test_head_init_follows_the_config():
    model = build_refined_det(REFINED_DET_PRESETS["pico"], ["a"])
    assert torch.allclose(model.bbox_head.retina_cls.bias, torch.tensor(-math.log(99.0)))
    assert model.bbox_head.stacked_convs == 1


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from qgis_unravel.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    tif, gpkg = folder / "scene_4.tif", folder / "scene_4.gpkg"
    write_scene(tif, gpkg, seed=4, size=256)
    return tif, gpkg


def test_train_command_with_refined_det_writes_a_loadable_checkpoint(scene, tmp_path, capsys):
    from qgis_unravel import load_detector
    from qgis_unravel.app.train_cli import main
    from qgis_unravel.detector.refined_det import RefinedDet
    from qgis_unravel.synthetic import CLASS_NAMES

    tif, gpkg = scene
    out = tmp_path / "run"
    args = [
        "train",
        "--arch",
        "refined-det",
        "--preset",
        "pico",
        "--raster",
        str(tif),
        "--labels",
        str(gpkg),
        "--tile-size",
        "128",
        "--overlap",
        "32",
        "--batch-size",
        "1",
        "--warmup-iters",
        "1",
        "--classes",
        ",".join(CLASS_NAMES),
        "--out",
        str(out),
        "--no-progress",
        "--iterations",
        "2",
    ]
    assert main(args) == 0
    assert "random weights" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(entry["loss"]) for entry in log)
    assert "refine.loss_cls" in log[-1]
    detector = load_detector(out / "latest.pth")
    assert isinstance(detector, RefinedDet) and detector.classes == list(CLASS_NAMES)
    assert main(args[:4] + ["nope"] + args[5:]) == 2
    assert "unknown refined-det preset" in capsys.readouterr().err


@pytest.mark.parametrize("boxes", ["anchors", "jittered"])
def test_cla_matches_the_reference_assigner(boxes, monkeypatch):
    """The fork's CLA (its CUDA-only pieces replaced, see tests/golden/refined_det/README.md) on a
    256 x 320 image with 12 objects, for the square anchors (pass 1) and jittered boxes (pass 2).

    Given the reference's IoU matrix the assignment is identical. Our own rotated IoU differs from it
    by ~1e-7, which only matters where an object's best IoU is tied between anchors."""
    import golden_data

    import qgis_unravel.training.refined_det as refined
    from qgis_unravel.detector.refined_det.model import STRIDES
    from qgis_unravel.training.targets import rotated_overlaps

    data = np.load(golden_data.GOLDEN / "refined_det" / "cla_assign.npz")
    height, width = (int(v) for v in data["pad_hw"])
    sizes = [(-(-height // s), -(-width // s)) for s in STRIDES]
    gts, priors = torch.from_numpy(data["gt_bboxes"]), torch.from_numpy(data[f"{boxes}_boxes"])
    expected = torch.from_numpy(data[f"{boxes}_assigned"])
    reference_iou = torch.from_numpy(data[f"{boxes}_overlaps"])
    assert (rotated_overlaps(gts, priors) - reference_iou).abs().max() < 1e-6
    monkeypatch.setattr(refined, "rotated_overlaps", lambda g, b: reference_iou)
    assigned = cla_assign(priors, gts, sizes, (height, width))
    assert (expected > 0).sum() > 30
    assert torch.equal(assigned, expected)
