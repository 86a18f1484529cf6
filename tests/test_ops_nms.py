"""Rotated and horizontal NMS match mmcv 1.7.2 (golden op_nms_rotated.npz) and a naive greedy pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qgis_unravel.ops import (
    batched_nms,
    batched_nms_rotated,
    box_iou_rotated,
    grouped_nms_rotated,
    nms_rotated,
)
from qgis_unravel.ops import greedy as greedy_mod
from qgis_unravel.ops import spatial as spatial_mod
from qgis_unravel.ops.nms import nms


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "op_nms_rotated.npz")


def _naive_greedy(iou: torch.Tensor, scores: torch.Tensor, thr: float, strict: bool) -> torch.Tensor:
    """The textbook sequential pass over a dense IoU matrix (mmcv's CPU loop)."""
    order = torch.sort(scores, descending=True, stable=True)[1].tolist()
    iou = iou.tolist()
    removed = set()
    keep = []
    for pos, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if j not in removed and (iou[i][j] > thr if strict else iou[i][j] >= thr):
                removed.add(j)
    return torch.tensor(keep, dtype=torch.long)


def _clustered_boxes(
    n: int, seed: int, objects: int = 12, spread: float = 200.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered copies of a few objects, like detector candidates: many overlapping pairs."""
    g = torch.Generator().manual_seed(seed)
    base_ctr = torch.rand(objects, 2, generator=g) * spread
    base_wh = torch.rand(objects, 2, generator=g) * 40 + 8
    base_a = torch.rand(objects, 1, generator=g) * math.pi - math.pi / 2
    pick = torch.randint(0, objects, (n,), generator=g)
    ctr = base_ctr[pick] + torch.randn(n, 2, generator=g) * 4
    wh = base_wh[pick] * (1 + 0.15 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    a = base_a[pick] + 0.2 * torch.randn(n, 1, generator=g)
    scores = torch.rand(n, generator=g)
    return torch.cat([ctr, wh, a], dim=1), scores


@pytest.mark.parametrize("thr", ["0.1", "0.5"])
def test_matches_mmcv(golden, thr):
    keep = nms_rotated(torch.from_numpy(golden["boxes"]), torch.from_numpy(golden["scores"]), float(thr))
    assert keep.dtype == torch.int64
    np.testing.assert_array_equal(keep.numpy(), golden[f"keep_iou{thr}"])


def test_class_offset_variant_matches_mmrotate(golden):
    keep = batched_nms_rotated(
        torch.from_numpy(golden["boxes"]),
        torch.from_numpy(golden["scores"]),
        torch.from_numpy(golden["labels_3cls"]),
        0.1,
    )
    np.testing.assert_array_equal(keep.numpy(), golden["keep_iou0.1_offset_trick_3cls"])


@pytest.mark.parametrize("thr", [0.05, 0.3, 0.7])
def test_equals_naive_greedy_on_dense_clusters(thr):
    boxes, scores = _clustered_boxes(400, seed=int(thr * 100))
    ref = _naive_greedy(box_iou_rotated(boxes, boxes), scores, thr, strict=False)
    torch.testing.assert_close(nms_rotated(boxes, scores, thr), ref, rtol=0, atol=0)


def test_small_blocks_give_the_same_keep(monkeypatch):
    boxes, scores = _clustered_boxes(300, seed=7)
    ref = nms_rotated(boxes, scores, 0.2)
    monkeypatch.setattr(greedy_mod, "BLOCK", 16)
    monkeypatch.setattr(spatial_mod, "_ENUM_BUDGET", 64)
    torch.testing.assert_close(nms_rotated(boxes, scores, 0.2), ref, rtol=0, atol=0)


@pytest.fixture
def accelerator_path(monkeypatch):
    """Every NMS takes the single-block path that accelerators use, here on CPU."""
    monkeypatch.setattr(greedy_mod, "prefers_dense", lambda device, n: True)
    monkeypatch.setattr(greedy_mod, "PAIR_CHUNK", 97)  # several chunks of the exact test
    monkeypatch.setattr(greedy_mod, "_ROW_CHUNK", 33)  # several row chunks of the bounds test


@pytest.mark.parametrize("thr", [0.05, 0.3, 0.7])
def test_accelerator_path_keeps_the_same_rotated_boxes(thr, accelerator_path):
    boxes, scores = _clustered_boxes(400, seed=int(thr * 100))
    ref = _naive_greedy(box_iou_rotated(boxes, boxes), scores, thr, strict=False)
    torch.testing.assert_close(nms_rotated(boxes, scores, thr), ref, rtol=0, atol=0)
    labels = torch.randint(0, 3, (400,), generator=torch.Generator().manual_seed(1))
    far = boxes.double()
    far[:, :2] += 1e6
    keep = grouped_nms_rotated(far, scores, labels, thr)
    for c in range(3):
        idx = torch.nonzero(labels == c)[:, 0]
        sub = boxes[idx]
        want = idx[_naive_greedy(box_iou_rotated(sub, sub), scores[idx], thr, strict=False)]
        assert sorted(keep[labels[keep] == c].tolist()) == sorted(want.tolist())


def test_accelerator_path_keeps_the_same_horizontal_boxes(accelerator_path):
    boxes, scores = _xyxy(400, seed=21)
    ref = _naive_greedy(_dense_hbb_iou(boxes), scores, 0.5, strict=True)
    torch.testing.assert_close(nms(boxes, scores, 0.5), ref, rtol=0, atol=0)
    idxs = torch.randint(0, 5, (400,), generator=torch.Generator().manual_seed(2))
    keep = batched_nms(boxes + 100.0, scores, idxs, 0.6)
    shifted = (boxes + 100.0) + (idxs.to(boxes) * ((boxes + 100.0).max() + 1))[:, None]
    for c in range(5):
        idx = torch.nonzero(idxs == c)[:, 0]
        want = idx[_naive_greedy(_dense_hbb_iou(shifted[idx]), scores[idx], 0.6, strict=True)]
        assert sorted(keep[idxs[keep] == c].tolist()) == sorted(want.tolist())


def test_accelerator_path_agrees_with_the_cpu_walk_on_mmcv_data(golden, monkeypatch):
    boxes, scores = torch.from_numpy(golden["boxes"]), torch.from_numpy(golden["scores"])
    monkeypatch.setattr(greedy_mod, "prefers_dense", lambda device, n: True)
    np.testing.assert_array_equal(nms_rotated(boxes, scores, 0.1).numpy(), golden["keep_iou0.1"])


def test_keep_is_invariant_to_input_permutation():
    boxes, scores = _clustered_boxes(250, seed=11)
    keep = nms_rotated(boxes, scores, 0.3)
    perm = torch.randperm(250, generator=torch.Generator().manual_seed(0))
    keep_perm = nms_rotated(boxes[perm], scores[perm], 0.3)
    torch.testing.assert_close(perm[keep_perm], keep, rtol=0, atol=0)


def test_keep_is_sorted_by_score_and_survivors_do_not_overlap():
    boxes, scores = _clustered_boxes(300, seed=5)
    keep = nms_rotated(boxes, scores, 0.25)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    iou = box_iou_rotated(boxes[keep], boxes[keep])
    iou.fill_diagonal_(0)
    assert iou.max() < 0.25


def test_threshold_edge_cases():
    boxes, scores = _clustered_boxes(50, seed=2)
    # mmcv's CPU kernel suppresses at IoU >= threshold, so 0 keeps only the best box ...
    assert nms_rotated(boxes, scores, 0.0).tolist() == [int(scores.argmax())]
    # ... and above 1 nothing is suppressed.
    assert nms_rotated(boxes, scores, 1.01).tolist() == torch.argsort(scores, descending=True).tolist()
    # identical boxes have IoU 1 >= 1.
    twin = torch.tensor([[10.0, 10.0, 8.0, 4.0, 0.3]] * 2)
    assert nms_rotated(twin, torch.tensor([0.5, 0.9]), 1.0).tolist() == [1]


def test_empty_and_bad_input():
    assert nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.1).numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
    with pytest.raises(ValueError, match="boxes must have shape"):
        nms_rotated(torch.zeros(3, 4), torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="scores must have shape"):
        nms_rotated(torch.zeros(3, 5), torch.zeros(4), 0.1)


def test_batched_rotated_never_suppresses_across_classes():
    boxes, scores = _clustered_boxes(300, seed=9)
    labels = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(1))
    keep = batched_nms_rotated(boxes, scores, labels, 0.1)
    ref = []
    for c in range(4):
        idx = torch.nonzero(labels == c)[:, 0]
        ref.append(idx[nms_rotated(boxes[idx], scores[idx], 0.1)])
    ref = torch.cat(ref).sort()[0]  # ties in score: lower index first
    ref = ref[torch.sort(scores[ref], descending=True, stable=True)[1]]
    torch.testing.assert_close(keep, ref, rtol=0, atol=0)


@pytest.mark.parametrize("thr", [0.1, 0.5])
def test_grouped_nms_in_float64_far_from_the_origin_equals_per_group_naive_greedy(thr):
    boxes, scores = _clustered_boxes(300, seed=11)
    labels = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(2))
    far = boxes.double()
    far[:, :2] += 250_000.0  # raster-wide coordinates: float32 would lose the sub-pixel detail
    keep = grouped_nms_rotated(far, scores.double(), labels, thr)
    ref = []
    for c in range(3):
        idx = torch.nonzero(labels == c)[:, 0]
        local = boxes[idx].double()
        ref.append(idx[_naive_greedy(box_iou_rotated(local, local), scores[idx], thr, strict=False)])
    ref = torch.cat(ref)
    ref = ref[torch.sort(scores[ref], descending=True, stable=True)[1]]
    assert keep.tolist() == ref.tolist() and 0 < len(keep) < 300


def _xyxy(n: int, seed: int, objects: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scores = _clustered_boxes(n, seed, objects=objects, spread=20.0 * objects**0.5 + 150)
    half = boxes[:, 2:4] / 2
    return torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], dim=1), scores


def _dense_hbb_iou(b: torch.Tensor) -> torch.Tensor:
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lo = torch.maximum(b[:, None, :2], b[None, :, :2])
    hi = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    w, h = (hi - lo).clamp(min=0).unbind(-1)
    inter = w * h
    return inter / (area[:, None] + area[None, :] - inter)


def test_horizontal_nms_equals_naive_strict_greedy():
    boxes, scores = _xyxy(400, seed=21)
    ref = _naive_greedy(_dense_hbb_iou(boxes), scores, 0.5, strict=True)
    torch.testing.assert_close(nms(boxes, scores, 0.5), ref, rtol=0, atol=0)


def test_horizontal_threshold_is_strict():
    twin = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert nms(twin, torch.tensor([0.9, 0.5]), 1.0).tolist() == [0, 1]
    assert nms(twin, torch.tensor([0.9, 0.5]), 0.99).tolist() == [0]


@pytest.mark.parametrize("n", [600, 10050])
def test_batched_nms_is_per_group(n):
    # n >= 10000 takes mmcv's one-NMS-per-group path. Either way the result is a per-group greedy
    # pass over mmcv's shifted boxes (the shift changes float rounding, so the reference uses it too).
    boxes, scores = _xyxy(n, seed=n, objects=n // 25)
    boxes = boxes + 100.0  # all coordinates positive: shifted groups cannot overlap
    idxs = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(2))
    keep = batched_nms(boxes, scores, idxs, 0.6)
    shifted = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
    ref = []
    for c in range(5):
        idx = torch.nonzero(idxs == c)[:, 0]
        ref.append(idx[nms(shifted[idx], scores[idx], 0.6)])
    ref = torch.cat(ref).sort()[0]  # ties in score: lower index first
    ref = ref[torch.sort(scores[ref], descending=True, stable=True)[1]]
    torch.testing.assert_close(keep, ref, rtol=0, atol=0)


def test_batched_nms_large_input_keeps_groups_apart_even_with_negative_coordinates():
    # Two groups whose shifted boxes would overlap: from 10000 boxes on mmcv runs NMS per group.
    n = 10000
    g = torch.Generator().manual_seed(4)
    x1 = torch.rand(n, generator=g) * 50 - 500
    boxes = torch.stack([x1, x1 * 0, x1 + 600, x1 * 0 + 10], dim=1)
    idxs = (torch.arange(n) % 2).long()
    keep = batched_nms(boxes, torch.rand(n, generator=g), idxs, 0.5)
    assert sorted(idxs[keep].tolist()) == [0, 1]


@pytest.mark.parametrize("spread", [60.0, 5000.0])
def test_grid_index_finds_exactly_the_touching_pairs(spread):
    g = torch.Generator().manual_seed(int(spread))
    n = 300
    lo = torch.rand(n, 2, generator=g) * spread - spread / 3
    size = torch.rand(n, 2, generator=g) ** 4 * 80  # mostly small, a few large; some zero-size
    size[:5] = 0
    aabb = torch.cat([lo, lo + size], dim=1)
    aabb[5] = torch.tensor([-spread, -spread, 2 * spread, 2 * spread])  # one box covering all
    queries = torch.arange(0, n, 3)
    q, j = spatial_mod.GridIndex(aabb).touching(queries)
    got = sorted(zip(q.tolist(), j.tolist()))
    a, b = aabb[queries][:, None], aabb[None]
    touch = ((a[..., :2] <= b[..., 2:]) & (b[..., :2] <= a[..., 2:])).all(-1)
    qi, jj = torch.nonzero(touch, as_tuple=True)
    want = sorted((int(queries[x]), int(y)) for x, y in zip(qi, jj) if int(queries[x]) != int(y))
    assert got == want


def test_non_finite_boxes_neither_crash_nor_suppress():
    nan, inf = float("nan"), float("inf")
    boxes = torch.tensor(
        [[0, 0, 10, 5, 0.0], [1, 0, 10, 5, 0], [nan, 0, 1, 1, 0], [0, 0, inf, 1, 0], [0, 0, inf, 1, 0.3]]
    )
    keep = nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), 0.5)
    assert keep.tolist() == [0, 2, 3, 4]


def test_nms_on_the_test_device_keeps_what_the_cpu_walk_keeps(test_device, monkeypatch):
    # On a GPU (QGIS_UNRAVEL_TEST_DEVICE=cuda) NMS takes the single-block path by itself; on CPU
    # the same path is forced, so the comparison is never the CPU walk against itself.
    boxes, scores = _clustered_boxes(600, seed=3)
    hboxes, hscores = _xyxy(900, seed=4)
    idxs = torch.randint(0, 5, (900,), generator=torch.Generator().manual_seed(5))
    labels = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(6))
    cases = [
        lambda dev: nms_rotated(boxes.to(dev), scores.to(dev), 0.1),
        lambda dev: nms_rotated(boxes.to(dev), scores.to(dev), 0.5),
        lambda dev: batched_nms_rotated(boxes.to(dev), scores.to(dev), labels.to(dev), 0.1),
        lambda dev: grouped_nms_rotated(boxes.double().to(dev), scores.to(dev), labels.to(dev), 0.3),
        lambda dev: nms(hboxes.to(dev), hscores.to(dev), 0.7),
        lambda dev: batched_nms((hboxes + 50).to(dev), hscores.to(dev), idxs.to(dev), 0.7),
    ]
    want = [case("cpu") for case in cases]
    if test_device == "cpu":
        monkeypatch.setattr(greedy_mod, "prefers_dense", lambda device, n: True)
    for case, ref in zip(cases, want):
        got = case(test_device)
        assert got.device.type == torch.device(test_device).type
        torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=0)
