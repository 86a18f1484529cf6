"""Single ops on random inputs: mmcv 1.7.2's compiled CPU kernels and mmrotate 0.3.4's box code.

Each file has its own ``torch.Generator`` seed. Random rotated boxes are le90:
``a ~ U[-pi/2, pi/2)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .common import save_npz


def random_boxes(gen: torch.Generator, n: int, centre: float, wh: tuple) -> torch.Tensor:
    ctr = torch.rand(n, 2, generator=gen) * centre
    size = torch.rand(n, 2, generator=gen) * (wh[1] - wh[0]) + wh[0]
    a = torch.rand(n, 1, generator=gen) * math.pi - math.pi / 2
    return torch.cat([ctr, size, a], dim=1)


def roi_align_rotated(out: Path) -> None:
    from mmcv.ops import RoIAlignRotated

    gen = torch.Generator().manual_seed(11)
    channels, height, width, n = 8, 160, 192, 40
    feats = {4: torch.randn(2, channels, height // 4, width // 4, generator=gen),
             8: torch.randn(2, channels, height // 8, width // 8, generator=gen)}
    boxes = random_boxes(gen, n, 1.0, (4.0, 90.0))
    boxes[:, 0] = boxes[:, 0] * (width + 40) - 20  # some boxes cross the edges
    boxes[:, 1] = boxes[:, 1] * (height + 40) - 20
    batch = torch.randint(0, 2, (n, 1), generator=gen).float()
    rois = torch.cat([batch, boxes], dim=1)
    arrays = {"feat_s4": feats[4], "feat_s8": feats[8], "rois": rois}
    for stride, feat in feats.items():
        for clockwise in (True, False):
            layer = RoIAlignRotated(7, 1.0 / stride, sampling_ratio=2, aligned=True, clockwise=clockwise)
            arrays[f"out_s{stride}_clockwise{int(clockwise)}"] = layer(feat, rois)
    save_npz(out / "op_roi_align_rotated.npz", arrays)


def nms_rotated(out: Path) -> None:
    from mmcv.ops import nms_rotated as mmcv_nms_rotated

    gen = torch.Generator().manual_seed(12)
    boxes = random_boxes(gen, 200, 120.0, (8.0, 48.0))
    scores = torch.rand(200, generator=gen)
    arrays = {"boxes": boxes, "scores": scores}
    for thr in (0.1, 0.5):
        dets, keep = mmcv_nms_rotated(boxes, scores, thr)
        arrays[f"keep_iou{thr}"] = keep.long()
        arrays[f"kept_dets_iou{thr}"] = dets
    labels = torch.randint(0, 3, (200,), generator=gen)
    # multiclass_nms_rotated's trick: shift each class far apart, then one class-blind NMS.
    offset = boxes[:, :2].max() + boxes[:, 2:4].max() + 1
    shifted = boxes.clone()
    shifted[:, :2] += labels[:, None].float() * offset
    _, keep = mmcv_nms_rotated(shifted, scores, 0.1)
    arrays.update(labels_3cls=labels, **{"keep_iou0.1_offset_trick_3cls": keep.long()})
    save_npz(out / "op_nms_rotated.npz", arrays)


def box_iou_rotated(out: Path) -> None:
    from mmcv.ops import box_iou_rotated as mmcv_iou

    gen = torch.Generator().manual_seed(13)
    boxes1 = random_boxes(gen, 30, 100.0, (2.0, 42.0))
    boxes2 = random_boxes(gen, 40, 100.0, (2.0, 42.0))
    boxes2[:5] = boxes1[:5]  # identical: IoU 1
    boxes2[5:8] = boxes1[5:8]
    boxes2[5:8, 4] += math.pi / 2  # same centre and sides, turned a quarter: other boxes
    arrays = {"boxes1": boxes1, "boxes2": boxes2,
              "iou": mmcv_iou(boxes1, boxes2, "iou", clockwise=True),
              "iof": mmcv_iou(boxes1, boxes2, "iof", clockwise=True),
              "iou_aligned_first30": mmcv_iou(boxes1, boxes2[:30], "iou", aligned=True, clockwise=True)}
    save_npz(out / "op_box_iou_rotated.npz", arrays)


def bbox_coders(out: Path) -> None:
    from mmrotate.core import build_bbox_coder

    gen = torch.Generator().manual_seed(14)
    n = 300
    mp = build_bbox_coder(dict(type="MidpointOffsetCoder", angle_range="le90", target_means=[0.0] * 6,
                               target_stds=[1.0, 1.0, 1.0, 1.0, 0.5, 0.5]))
    xy = torch.rand(n, 2, generator=gen) * 240 + 8
    wh = torch.rand(n, 2, generator=gen) * 120 + 4
    anchors = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    mp_deltas = torch.randn(n, 6, generator=gen) * 0.3
    mp_deltas[:10, 2], mp_deltas[:10, 3] = 6.0, -6.0  # past the wh-ratio clip
    mp_deltas[10:20, 4], mp_deltas[10:20, 5] = 1.5, -1.5  # past the +-0.5 midpoint clamp
    obb = build_bbox_coder(dict(type="DeltaXYWHAOBBoxCoder", angle_range="le90", norm_factor=None,
                                edge_swap=True, proj_xy=True, target_means=(0.0,) * 5,
                                target_stds=(0.1, 0.1, 0.2, 0.2, 0.1)))
    rois = random_boxes(gen, n, 256.0, (4.0, 120.0))
    obb_deltas = torch.randn(n, 5, generator=gen) * 0.5
    obb_deltas[:10, 2], obb_deltas[:10, 3] = 20.0, -20.0
    obb_deltas[:, :2] *= 10  # some centres leave the 256 x 256 image
    obb_gt = rois + torch.randn(n, 5, generator=gen) * torch.tensor([4.0, 4.0, 6.0, 6.0, 0.2])
    obb_gt[:, 2:4] = obb_gt[:, 2:4].abs() + 2
    obb_gt[:, 4] = (obb_gt[:, 4] + math.pi / 2) % math.pi - math.pi / 2
    mp_gt = random_boxes(gen, n, 1.0, (4.0, 100.0))
    mp_gt[:, :2] = xy + torch.randn(n, 2, generator=gen) * 6
    arrays = {
        "mp_anchors_xyxy": anchors, "mp_deltas": mp_deltas,
        "mp_decoded": mp.decode(anchors, mp_deltas, max_shape=(256, 256)),
        "obb_rois": rois, "obb_deltas": obb_deltas,
        "obb_decoded_maxshape256": obb.decode(rois, obb_deltas, max_shape=(256, 256)),
        "obb_decoded_nomaxshape": obb.decode(rois, obb_deltas),
        "obb_enc_gt": obb_gt, "obb_encoded": obb.encode(rois, obb_gt),
        "mp_enc_gt": mp_gt, "mp_encoded": mp.encode(anchors, mp_gt),
    }
    save_npz(out / "op_bbox_coders.npz", arrays)


def transforms(out: Path) -> None:
    from mmrotate.core import norm_angle, obb2poly, obb2xyxy, poly2obb

    gen = torch.Generator().manual_seed(15)
    boxes = random_boxes(gen, 200, 300.0, (2.0, 80.0))
    boxes[:4, 4] = torch.tensor([-math.pi / 2, 0.0, math.pi / 4, -math.pi / 4])
    boxes[4:8, 3] = boxes[4:8, 2]  # squares
    polys_exact = obb2poly(boxes, "le90")
    polys = polys_exact + torch.randn(200, 8, generator=gen) * 0.5
    polys[:4] = polys_exact[:4]
    angles = torch.linspace(-2 * math.pi, 2 * math.pi, 101)
    arrays = {"obb": boxes, "obb2poly_le90": polys_exact, "obb2xyxy_le90": obb2xyxy(boxes, "le90"),
              "polys": polys, "poly2obb_le90": poly2obb(polys, "le90"),
              "norm_angle_in": angles, "norm_angle_le90": norm_angle(angles, "le90")}
    save_npz(out / "op_transforms.npz", arrays)


def generate(out: Path) -> None:
    for make in (roi_align_rotated, nms_rotated, box_iou_rotated, bbox_coders, transforms):
        make(out)
