"""Eager vs channels-last vs oneDNN vs torch.compile for the Tiny network on CPU, side by side.

    .venv/bin/python bench/bench_cpu_variants.py                       # 2 threads, 5 rounds
    .venv/bin/python bench/bench_cpu_variants.py --rounds 3 --no-compile

One full forward (backbone, FPN, RPN, RoI head, post-processing) of the Tiny UnravelNet Oriented
R-CNN on one 1024 x 1024 tile per variant, the variants interleaved round by round so that a
machine whose load changes during the run slows them all alike. Variants:

* ``exact``: ``load_detector(fast=False)``: BatchNorms unfolded, NCHW maps (mmrotate's layout);
* ``fold``: BatchNorms folded into the convolutions, NCHW;
* ``fold+cl``: folded and channels-last: today's default (``load_detector(fast=True)``);
* ``fold+cl, no oneDNN``: the same with ``torch.backends.mkldnn`` switched off (what oneDNN gives);
* ``fold, oneDNN frozen``: the backbone traced, frozen and ``optimize_for_inference``'d (oneDNN
  layouts and fusions through TorchScript);
* ``fold+cl, compiled``: ``torch.compile`` on backbone and FPN (the rest has data-dependent shapes);
  the compile time is reported apart and bounded by ``--compile-timeout``.

Each variant's detections are compared with ``exact``'s (largest box difference in pixels), so a
faster variant that changed the result is visible. The mmrotate reference (golden README, 3.5 s per
tile, 2 threads) gives the ratio column. The machine's load average is printed: on a shared machine
report the min-max range over rounds, not a single figure.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_network import calibrate, make_input, tiny_detector  # noqa: E402

from qgis_unravel.detector.roi_head import rois_from_proposals  # noqa: E402

MMROTATE_S_PER_TILE = 3.5


def _set_score_threshold(detector: Any, batch: torch.Tensor, candidates: int) -> None:
    with torch.inference_mode():
        feats = detector.extract_feat(batch)
        rois = rois_from_proposals(detector.rpn_head.proposals(*detector.rpn_head(feats)))
        detector.roi_head.test_cfg.score_thr = calibrate(detector, feats, rois, candidates)


class _NoOneDNN(torch.nn.Module):
    """Runs the wrapped detector with oneDNN (mkldnn) switched off."""

    def __init__(self, detector: Any):
        super().__init__()
        self.detector = detector

    def forward(self, batch: torch.Tensor) -> Any:
        with torch.backends.mkldnn.flags(enabled=False):
            return self.detector(batch)


def _frozen_backbone(detector: Any, batch: torch.Tensor) -> Any:
    """Backbone traced, frozen and optimised for inference (oneDNN through TorchScript)."""
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(detector.backbone, batch, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    class Frozen(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return tuple(frozen(x))

    detector.backbone = Frozen()
    return detector


def _compiled(detector: Any, batch: torch.Tensor, timeout_s: float) -> Optional[float]:
    """Compile backbone and FPN in place; the seconds the first call took, None on time-out/failure."""
    detector.backbone = torch.compile(detector.backbone)
    detector.neck = torch.compile(detector.neck)
    outcome: Dict[str, Any] = {}

    def first_call() -> None:
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                detector(batch)
            outcome["s"] = time.perf_counter() - t0
        except Exception as exc:  # a compiler failure is a result to report, not a crash
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=first_call, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        print(f"torch.compile: first call still running after {timeout_s:.0f} s; variant dropped")
        return None
    if "error" in outcome:
        print(f"torch.compile failed: {outcome['error'][:300]}")
        return None
    return outcome["s"]


def build_variants(args: argparse.Namespace, batch: torch.Tensor) -> Dict[str, Callable[[], Any]]:
    base = tiny_detector()
    _set_score_threshold(base, batch, args.candidates)
    made: Dict[str, Any] = {}
    exact = copy.deepcopy(base)
    exact.fast = False
    made["exact"] = exact
    fold = copy.deepcopy(base)
    fold.fast = True
    fold.backbone.channels_last_when_fast = False
    made["fold"] = fold
    fold_cl = copy.deepcopy(base)
    fold_cl.fast = True
    made["fold+cl (today)"] = fold_cl
    made["fold+cl, no oneDNN"] = _NoOneDNN(copy.deepcopy(fold_cl))
    if not args.no_frozen:
        try:
            made["fold, oneDNN frozen"] = _frozen_backbone(copy.deepcopy(fold), batch)
        except Exception as exc:
            print(f"oneDNN frozen variant failed: {type(exc).__name__}: {exc}"[:300])
    if not args.no_compile:
        compiled = copy.deepcopy(fold_cl)
        seconds = _compiled(compiled, batch, args.compile_timeout)
        if seconds is not None:
            print(f"torch.compile: first call (compilation included) {seconds:.1f} s")
            made["fold+cl, compiled"] = compiled
    return {name: (lambda d=d: d(batch)) for name, d in made.items()}


def max_box_diff(a: List[Dict[str, torch.Tensor]], b: List[Dict[str, torch.Tensor]]) -> float:
    boxes_a, boxes_b = a[0]["boxes"], b[0]["boxes"]
    if boxes_a.shape != boxes_b.shape:
        return float("inf")
    if boxes_a.numel() == 0:
        return 0.0
    return float((boxes_a[:, :4] - boxes_b[:, :4]).abs().max())


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each runs every variant once)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-frozen", action="store_true")
    parser.add_argument("--compile-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    batch = make_input(args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(batch.shape)}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    variants = build_variants(args, batch)
    outputs = {}
    with torch.inference_mode():
        for name, run in variants.items():  # warm-up, and the outputs to compare
            outputs[name] = run()
        times: Dict[str, List[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = statistics.median(times["fold+cl (today)"])
    print(f"{'variant':<24}{'median s':>10}{'min s':>8}{'max s':>8}{'vs today':>10}"
          f"{'vs mmrotate':>13}{'box diff px':>13}")
    for name, ts in times.items():
        med = statistics.median(ts)
        diff = max_box_diff(outputs[name], outputs["exact"])
        print(f"{name:<24}{med:10.3f}{min(ts):8.3f}{max(ts):8.3f}{med / base:10.2f}"
              f"{min(ts) / MMROTATE_S_PER_TILE:6.2f}-{max(ts) / MMROTATE_S_PER_TILE:.2f}x{diff:13.2e}")
    print("(vs mmrotate: min-max over rounds of time / 3.5 s, the golden README's reference tile; "
          "box diff: largest |x, y, w, h| difference to the exact variant's detections)")


if __name__ == "__main__":
    main()
