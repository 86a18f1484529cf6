"""Timings of the rotated ops (run by hand: ``.venv/bin/python bench/bench_ops.py [--device cuda]``).

Rotated NMS is timed on DOTA-like candidates in a 1024 x 1024 image, the way the RoI head makes
them: proposals jittered around objects, each proposal repeated for 15 classes and suppressed per
class (``batched_nms_rotated``, IoU 0.1), plus a single-class stress case of uniformly scattered
boxes. mmcv's single-threaded CPU numbers from docs/golden.md are printed beside ours: they are
the whole RoI-head ``simple_test`` minus its ~1 s at 100 candidates, i.e. mostly NMS.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch

from qgis_unravel.ops import batched_nms, batched_nms_rotated, nms_rotated, roi_align_rotated

# mmcv 1.7.2 CPU, RoI-head simple_test seconds by candidate count (docs/golden.md), minus 0.99 s.
MMCV_NMS_SECONDS = {1000: 1.36 - 0.99, 3000: 3.50 - 0.99, 10000: 21.7 - 0.99, 30000: 184.0 - 0.99}
NUM_CLASSES = 15
CPU_TIME = False


def _timed(fn: Callable[..., object], args: tuple, device: torch.device, repeats: int = 3) -> float:
    """Median wall time of ``repeats`` runs of ``fn(*args)`` after one warm-up.

    On a shared, oversubscribed machine wall time is inflated; ``--cpu-time`` reports the process
    CPU time instead (meaningful with ``--threads 1``).
    """
    fn(*args)
    times = []
    clock = time.process_time if CPU_TIME else time.perf_counter
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - start)
    return sorted(times)[len(times) // 2]


def dota_like_candidates(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` (proposal, class) candidates: n/15 proposals around objects, each for all 15 classes."""
    proposals = max(1, n // NUM_CLASSES)
    objects = max(1, proposals // 20)
    ctr = torch.rand(objects, 2, generator=g) * 1024
    long_side = torch.exp(torch.rand(objects, generator=g) * math.log(200 / 12)) * 12
    short_side = long_side * (torch.rand(objects, generator=g) * 0.75 + 0.25)
    angle = torch.rand(objects, generator=g) * math.pi - math.pi / 2
    pick = torch.randint(0, objects, (proposals,), generator=g)
    jitter = torch.randn(proposals, 5, generator=g)
    w = long_side[pick] * torch.exp(0.2 * jitter[:, 2])
    h = short_side[pick] * torch.exp(0.2 * jitter[:, 3])
    cx = ctr[pick, 0] + 0.15 * w * jitter[:, 0]
    cy = ctr[pick, 1] + 0.15 * w * jitter[:, 1]
    a = angle[pick] + 0.15 * jitter[:, 4]
    props = torch.stack([cx, cy, w, h, a], dim=1)
    boxes = props.repeat_interleave(NUM_CLASSES, dim=0)[:n]
    labels = torch.arange(NUM_CLASSES).repeat(proposals)[:n]
    scores = torch.rand(boxes.shape[0], generator=g)
    return boxes, scores, labels


def uniform_boxes(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` boxes scattered uniformly over the image, sides 12-120 px: a dense stress case."""
    ctr = torch.rand(n, 2, generator=g) * 1024
    w = torch.rand(n, generator=g) * 108 + 12
    h = w * (torch.rand(n, generator=g) * 0.75 + 0.25)
    a = torch.rand(n, generator=g) * math.pi - math.pi / 2
    return torch.stack([ctr[:, 0], ctr[:, 1], w, h, a], dim=1), torch.rand(n, generator=g)


def bench_nms(device: torch.device, sizes: list[int]) -> None:
    print("rotated NMS, IoU 0.1 (seconds; mmcv column: single-threaded mmcv 1.7.2 CPU)")
    print(f"{'candidates':>10} {'per-class':>10} {'kept':>6} {'uniform':>9} {'kept':>6} {'mmcv':>8}")
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        boxes, scores, labels = (t.to(device) for t in dota_like_candidates(n, g))
        t_cls = _timed(batched_nms_rotated, (boxes, scores, labels, 0.1), device)
        kept_cls = batched_nms_rotated(boxes, scores, labels, 0.1).numel()
        ub, us = (t.to(device) for t in uniform_boxes(n, g))
        t_uni = _timed(nms_rotated, (ub, us, 0.1), device, repeats=1)
        kept_uni = nms_rotated(ub, us, 0.1).numel()
        ref = MMCV_NMS_SECONDS.get(n)
        ref_txt = f"{ref:8.2f}" if ref is not None else f"{'-':>8}"
        print(f"{n:>10} {t_cls:>10.3f} {kept_cls:>6} {t_uni:>9.3f} {kept_uni:>6} {ref_txt}")


def bench_rpn_nms(device: torch.device) -> None:
    """Horizontal batched NMS as in the RPN: 5 levels x 2000 boxes, IoU 0.8."""
    g = torch.Generator().manual_seed(0)
    boxes, _, _ = dota_like_candidates(10000 * NUM_CLASSES, g)
    boxes = boxes[::NUM_CLASSES]
    half = boxes[:, 2:4] / 2
    xyxy = torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], dim=1).to(device)
    scores = torch.rand(xyxy.shape[0], generator=g).to(device)
    levels = (torch.arange(xyxy.shape[0]) // 2000).to(device)
    seconds = _timed(batched_nms, (xyxy, scores, levels, 0.8), device)
    kept = batched_nms(xyxy, scores, levels, 0.8).numel()
    print(f"horizontal batched NMS, 5 x 2000 boxes, IoU 0.8: {seconds:.3f} s ({kept} kept)")


def bench_roi_align(device: torch.device) -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 256, 256, 256, generator=g).to(device)
    boxes, _, _ = dota_like_candidates(2000 * NUM_CLASSES, g)
    boxes = boxes[::NUM_CLASSES][:2000]
    rois = torch.cat([torch.zeros(boxes.shape[0], 1), boxes], dim=1).to(device)
    seconds = _timed(roi_align_rotated, (feats, rois, 7, 0.25, 2), device)
    print(
        f"roi_align_rotated, 2000 RoIs x 256 ch x 7x7, P2 256x256: {seconds:.3f} s "
        "(mmcv CPU: RoIAlignRotated + 2 fc on 2000 RoIs took 1.16 s in all)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1000,3000,10000,30000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true", help="report process CPU time, not wall time")
    args = parser.parse_args()
    global CPU_TIME
    CPU_TIME = args.cpu_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = "process CPU time" if CPU_TIME else "wall time"
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, {clock}")
    bench_nms(device, [int(s) for s in args.sizes.split(",")])
    bench_rpn_nms(device)
    bench_roi_align(device)


if __name__ == "__main__":
    main()
