"""Per-tile time of Refined-Det beside UnravelNet-T Oriented R-CNN, in one run (by hand).

    .venv/bin/python bench/bench_refined_det.py                 # 1024 px, 2 threads, median of 3
    .venv/bin/python bench/bench_refined_det.py --size 512 --repeats 5

Both detectors are full size with random weights: Refined-Det ResNet-50 (the paper's config,
15 classes) built natively, UnravelNet-T Oriented R-CNN from the golden key list (skipped when
the shared golden folder is missing). Score thresholds are set so that about ``--candidates``
(box, class) pairs reach the final rotated NMS, as with trained models. Refined-Det's stages are
timed on their own (backbone+FPN, head pass 1, alignment conv, head pass 2, post-processing).
Also timed: the two small demo-sized networks (``nano`` presets), the models a CPU user trains.
Machines are noisy: run it twice and report ranges.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_network import golden_dir, make_input, timed, tiny_detector  # noqa: E402

from qgis_unravel.detector.folding import prepare_for_inference  # noqa: E402
from qgis_unravel.detector.refined_det.head import fuse, gate_features  # noqa: E402
from qgis_unravel.training.model import (  # noqa: E402
    PRESETS,
    REFINED_DET_PRESETS,
    build_model,
    build_refined_det,
)

DOTA = [f"c{i}" for i in range(15)]


def refined_det(preset: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    detector = build_refined_det(REFINED_DET_PRESETS[preset], DOTA, pretrained_backbone=True)
    return prepare_for_inference(detector)  # BatchNorms folded, as load_detector leaves it


def calibrate_refined(detector: Any, batch: torch.Tensor, wanted: int) -> None:
    """Score threshold leaving about ``wanted`` candidates after the per-level top-k."""
    with torch.inference_mode():
        out = detector.head_outputs(detector.extract_feat(batch))
    scores = torch.cat([c[0].flatten().sigmoid() for c in out["cls_score"]])
    detector.test_cfg.score_thr = float(torch.topk(scores, min(wanted, scores.numel())).values[-1]) - 1e-7


def stage_rows(detector: Any, batch: torch.Tensor, repeats: int) -> List[tuple]:
    rows = []
    with torch.inference_mode():
        wall, cpu, feats = timed(lambda: detector.extract_feat(batch), repeats)
        rows.append(("backbone+fpn", wall, cpu))
        head = detector.bbox_head
        wall, cpu, pass1 = timed(lambda: head(feats), repeats)
        rows.append(("head pass 1", wall, cpu))
        coarse_cls, coarse_reg, refine_cls, refine_reg, gates = pass1
        rois = detector.coarse_boxes(detector.anchors(feats), coarse_reg)
        gated = gate_features(feats, gates)
        wall, cpu, aligned = timed(lambda: detector.align_conv(gated, rois), repeats)
        rows.append(("align conv (deform)", wall, cpu))
        wall, cpu, pass2 = timed(lambda: head.coarse(aligned), repeats)
        rows.append(("head pass 2", wall, cpu))
        cls, reg = fuse(pass2[0], refine_cls), fuse(pass2[1], refine_reg)
        size = tuple(batch.shape[-2:])
        wall, cpu, _ = timed(
            lambda: detector.postprocess(
                [c[0] for c in cls], [r[0] for r in reg], [b[0] for b in rois], size
            ),
            repeats,
        )
        rows.append(("postprocess", wall, cpu))
    return rows


def full(detector: Any, batch: torch.Tensor, repeats: int) -> tuple:
    with torch.inference_mode():
        wall, cpu, out = timed(lambda: detector(batch), repeats)
    return wall, cpu, len(out[0]["scores"])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--candidates", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch = make_input(args.size)
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(batch.shape)}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )

    r50 = refined_det("r50")
    calibrate_refined(r50, batch, args.candidates)
    print(f"\nRefined-Det R50 ({sum(p.numel() for p in r50.parameters()):,} parameters) by stage:")
    print(f"{'stage':<22}{'wall s':>9}{'cpu s':>9}")
    for name, wall, cpu in stage_rows(r50, batch, args.repeats):
        print(f"{name:<22}{wall:9.3f}{cpu:9.3f}")

    print(f"\nfull forward per {args.size} px tile:")
    print(f"{'model':<34}{'wall s':>9}{'cpu s':>9}{'dets':>6}")
    results = {}
    wall, cpu, n = full(r50, batch, args.repeats)
    results["refined-det r50"] = wall
    print(f"{'Refined-Det ResNet-50':<34}{wall:9.3f}{cpu:9.3f}{n:6d}")
    if (golden_dir() / "state_dict_keys_tiny.txt").is_file():
        from bench_network import calibrate

        from qgis_unravel.detector.roi_head import rois_from_proposals

        tiny = prepare_for_inference(tiny_detector())
        with torch.inference_mode():
            feats = tiny.extract_feat(batch)
            rois = rois_from_proposals(tiny.rpn_head.proposals(*tiny.rpn_head(feats)))
        tiny.roi_head.test_cfg.score_thr = calibrate(tiny, feats, rois, args.candidates)
        wall, cpu, n = full(tiny, batch, args.repeats)
        results["unravelnet-t"] = wall
        print(f"{'UnravelNet-T Oriented R-CNN':<34}{wall:9.3f}{cpu:9.3f}{n:6d}")
    else:
        print(f"(UnravelNet-T skipped: no golden key list in {golden_dir()})")
    nano = refined_det("nano")
    calibrate_refined(nano, batch, args.candidates)
    wall, cpu, n = full(nano, batch, args.repeats)
    results["refined-det nano"] = wall
    print(f"{'Refined-Det nano (demo size)':<34}{wall:9.3f}{cpu:9.3f}{n:6d}")
    torch.manual_seed(0)
    orcnn_nano = prepare_for_inference(build_model(PRESETS["nano"], DOTA[:5]))
    orcnn_nano.roi_head.test_cfg.score_thr = 0.3
    wall, cpu, n = full(orcnn_nano, batch, args.repeats)
    results["unravelnet nano"] = wall
    print(f"{'UnravelNet nano Oriented R-CNN':<34}{wall:9.3f}{cpu:9.3f}{n:6d}")
    if "unravelnet-t" in results:
        ratio = results["refined-det r50"] / results["unravelnet-t"]
        print(f"\nratio Refined-Det R50 / UnravelNet-T: {ratio:.2f}")
    ratio = results["refined-det nano"] / results["unravelnet nano"]
    print(f"ratio Refined-Det nano / UnravelNet nano: {ratio:.2f}")


if __name__ == "__main__":
    main()
