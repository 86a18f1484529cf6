"""Per-stage timings of the Tiny UnravelNet Oriented R-CNN on one 1024 x 1024 tile (run by hand).

    .venv/bin/python bench/bench_network.py                  # 2 threads, median of 3 runs
    .venv/bin/python bench/bench_network.py --threads 1 --repeats 5 --exact

The network is built from the golden Tiny key list (``state_dict_keys_tiny.txt``) with random
weights (``build_detector(..., load=False)``); weights do not change the time, except through the
number of boxes that pass the score threshold, which is therefore set so that only a few
candidates reach the final rotated NMS, as with a trained model (the mmrotate reference was
measured that way). Each stage is timed on its own, on the previous stage's outputs, after one
warm-up: wall time and process CPU time (``time.process_time``, all threads summed), medians.
The mmrotate reference (docs/golden.md, torch 2.0.1, 2 threads, same machine class) is printed
beside them, with ratios ours / reference (below 1 means faster than mmrotate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from qgis_unravel.detector.checkpoint import build_detector  # noqa: E402
from qgis_unravel.detector.roi_head import rois_from_proposals  # noqa: E402

# mmrotate 0.3.4 / torch 2.0.1, 2 threads, 1 x 3 x 1024 x 1024 (docs/golden.md "Reference CPU timings").
REFERENCE_S: Dict[str, Optional[float]] = {
    "backbone": 1.73,
    "fpn": 2.00 - 1.73,
    "backbone+fpn": 2.00,
    "rpn+proposals": 0.57,
    "roi head (align+fcs)": 1.16,
    "roi postprocess": None,
    "full forward": 3.5,
}


def golden_dir() -> Path:
    """The project's golden data (its key lists are plain text files)."""
    return HERE.parent / "tests" / "golden"


def tiny_detector(seed: int = 0) -> Any:
    """Full-size Tiny UnravelNet Oriented R-CNN, random weights, eval mode."""
    return detector_from_keys(golden_dir() / "state_dict_keys_tiny.txt", seed)


def detector_from_keys(keys_file: Path, seed: int = 0) -> Any:
    """The detector whose state dict a golden key list (key, shape, dtype per line) describes,
    with random weights, eval mode."""
    shapes = {}
    for line in keys_file.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        shapes[key] = torch.zeros(json.loads(shape), dtype=getattr(torch, dtype))
    torch.manual_seed(seed)
    return build_detector(shapes, load=False)


def make_input(size: int, seed: int = 0) -> torch.Tensor:
    """A normalised (1, 3, size, size) batch of a smooth scene with bright rectangles."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    img = 100 + 30 * torch.sin(xx / 90.0) + 20 * torch.cos(yy / 70.0)
    img = img[None].repeat(3, 1, 1) + 8 * torch.randn(3, size, size, generator=g)
    for _ in range(150):
        cx, cy = (torch.rand(2, generator=g) * size).tolist()
        a = float(torch.rand(1, generator=g)) * 3.0 - 1.5
        half_l, half_w = 5 + 25 * float(torch.rand(1, generator=g)), 3 + 8 * float(torch.rand(1, generator=g))
        u = (xx - cx) * torch.cos(torch.tensor(a)) + (yy - cy) * torch.sin(torch.tensor(a))
        v = -(xx - cx) * torch.sin(torch.tensor(a)) + (yy - cy) * torch.cos(torch.tensor(a))
        inside = (u.abs() < half_l) & (v.abs() < half_w)
        img[:, inside] = (150 + 100 * torch.rand(3, 1, generator=g)).expand(3, int(inside.sum()))
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    return ((img.clamp(0, 255) - mean) / std)[None].contiguous()


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int,
          device: Optional[torch.device] = None) -> Tuple[float, float, Any]:
    """Median (wall, cpu) seconds of ``repeats`` calls after one warm-up, and the last result
    (on a GPU each call is followed by a synchronisation, so wall time includes the kernels)."""
    out = fn()
    _sync(device)
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(walls), statistics.median(cpus), out


def calibrate(detector: Any, feats: List[torch.Tensor], rois: torch.Tensor, wanted: int) -> float:
    """The score threshold that leaves about ``wanted`` (RoI, class) candidates for the final NMS."""
    with torch.inference_mode():
        cls_score, _ = detector.roi_head(feats, rois)
    fg = torch.softmax(cls_score, dim=-1)[:, :-1].flatten()
    wanted = max(1, min(wanted, fg.numel()))
    return float(torch.topk(fg, wanted).values[-1]) - 1e-7


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (reference: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (median)")
    parser.add_argument("--size", type=int, default=1024, help="tile side in pixels")
    parser.add_argument("--candidates", type=int, default=64,
                        help="(RoI, class) candidates above the score threshold (reference: 64)")
    parser.add_argument("--exact", action="store_true",
                        help="backbone without BN folding / channels-last (load_detector(fast=False))")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward (the same tile repeated)")
    parser.add_argument("--keys", default="state_dict_keys_tiny.txt",
                        help="golden key list of the network (under tests/golden)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of one full forward")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    detector = detector_from_keys(golden_dir() / args.keys).to(device)
    detector.fast = not args.exact  # as load_detector() sets it for inference
    batch = make_input(args.size).to(device).expand(args.batch, -1, -1, -1).contiguous()
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        load = (float("nan"),) * 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(batch.shape)}, "
          f"detector.fast={detector.fast}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")

    rows: Dict[str, Tuple[float, float]] = {}
    with torch.inference_mode():
        wall, cpu, outs = timed(lambda: detector.backbone(batch), args.repeats, device)
        rows["backbone"] = (wall, cpu)
        wall, cpu, feats = timed(lambda: list(detector.neck(list(outs))), args.repeats, device)
        rows["fpn"] = (wall, cpu)
        rows["backbone+fpn"] = (rows["backbone"][0] + wall, rows["backbone"][1] + cpu)
        rpn = detector.rpn_head
        wall, cpu, proposals = timed(lambda: rpn.proposals(*rpn(feats)), args.repeats, device)
        rows["rpn+proposals"] = (wall, cpu)
        rois = rois_from_proposals(proposals)
        detector.roi_head.test_cfg.score_thr = calibrate(detector, feats, rois, args.candidates)
        wall, cpu, head = timed(lambda: detector.roi_head(feats, rois), args.repeats, device)
        rows["roi head (align+fcs)"] = (wall, cpu)
        sizes = [tuple(batch.shape[-2:])] * batch.shape[0]
        wall, cpu, dets = timed(lambda: detector.roi_head.postprocess(rois, *head, sizes), args.repeats,
                                device)
        rows["roi postprocess"] = (wall, cpu)
        wall, cpu, results = timed(lambda: detector(batch), args.repeats, device)
        rows["full forward"] = (wall, cpu)

    print(f"{rois.shape[0]} proposals; score threshold {detector.roi_head.test_cfg.score_thr:.6f}; "
          f"{len(results[0]['scores'])} detections")
    print(f"{'stage':<22}{'wall s':>9}{'cpu s':>9}{'mmrotate s':>12}{'wall/ref':>10}")
    for name, (wall, cpu) in rows.items():
        ref = REFERENCE_S.get(name)
        ref_s = f"{ref:12.2f}" if ref is not None else f"{'-':>12}"
        ratio = f"{wall / ref:10.2f}" if ref else f"{'-':>10}"
        print(f"{name:<22}{wall:9.3f}{cpu:9.3f}{ref_s}{ratio}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.inference_mode(), profile(activities=activities) as prof:
            detector(batch)
            _sync(device)
        averages = prof.key_averages()
        if device.type == "cuda":
            for key in ("self_device_time_total", "self_cuda_time_total"):
                try:
                    print(averages.table(sort_by=key, row_limit=25))
                    break
                except (AttributeError, KeyError, ValueError):
                    continue
        print(averages.table(sort_by="self_cpu_time_total", row_limit=25))
    print("(cpu s is process CPU time over all threads; the reference is wall time with 2 threads; "
          "fpn reference = backbone+FPN 2.00 s - backbone 1.73 s)")


if __name__ == "__main__":
    main()
