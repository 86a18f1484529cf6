"""BatchNorm folding before/after, side by side in one run: UnravelNet-T and LEGNet-T (by hand).

    .venv/bin/python bench/bench_bn_folding.py                     # 1024 px, 2 threads, 3 rounds
    .venv/bin/python bench/bench_bn_folding.py --before e7a1e8d --rounds 5 --unfolded

Per 1024 x 1024 tile, the backbone forward and the full detector forward (random weights built
from the golden Tiny key lists; the RoI score threshold set so that about 64 candidates reach the
final NMS, as with a trained model), for three variants of each network:

* ``unfolded`` (with ``--unfolded``): this tree, ``load_detector(fast=False)``: every BatchNorm
  applied on its own;
* ``per-forward``: the ``--before`` commit's code with ``detector.fast = True`` (the BatchNorms
  were folded again inside every forward, by one mechanism per backbone);
* ``folded once``: this tree, ``prepare_for_inference`` (what ``load_detector`` does now).

Each measurement runs in a fresh process (the ``--before`` tree is extracted with
``git archive``), and the variants are interleaved round by round, so load changes on a shared
machine hit them alike. Reported: min-max over rounds of the median of ``--repeats`` timed
forwards, wall seconds and process CPU seconds (all threads). Ratios: folded once / per-forward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NETWORKS = {
    "UnravelNet-T": ROOT / "tests" / "golden" / "state_dict_keys_tiny.txt",
    "LEGNet-T": ROOT / "tests" / "golden" / "legnet" / "state_dict_keys_legnet_tiny.txt",
}
VARIANTS = ("unfolded", "per-forward", "folded once")


# ---------------------------------------------------------------------------- one measurement
def _detector(keys_file: str, variant: str):
    """The random-weight detector of a key list, prepared as ``variant`` says (either tree)."""
    import torch

    from qgis_unravel.detector.checkpoint import build_detector

    shapes = {}
    for line in Path(keys_file).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        shapes[key] = torch.zeros(json.loads(shape), dtype=getattr(torch, dtype))
    torch.manual_seed(0)
    detector = build_detector(shapes, load=False).eval()
    if variant == "per-forward":
        detector.fast = True  # the --before tree's switch
    elif variant == "folded once":
        from qgis_unravel.detector.folding import prepare_for_inference

        prepare_for_inference(detector)
    return detector


def _timed(fn, repeats: int) -> Dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def measure(keys_file: str, variant: str, size: int, threads: int, repeats: int) -> Dict[str, Any]:
    """Median backbone and full-forward times of one variant (runs inside the child process)."""
    import torch

    import qgis_unravel  # from PYTHONPATH (the tree under test), before bench_network adds ROOT
    from qgis_unravel.detector.roi_head import rois_from_proposals

    sys.path.insert(0, str(HERE))
    from bench_network import calibrate, make_input

    torch.set_num_threads(threads)
    detector = _detector(keys_file, variant)
    batch = make_input(size)
    with torch.inference_mode():
        feats = detector.extract_feat(batch)  # also the warm-up of both timings
        rois = rois_from_proposals(detector.rpn_head.proposals(*detector.rpn_head(feats)))
        detector.roi_head.test_cfg.score_thr = calibrate(detector, feats, rois, 64)
        return {
            "tree": str(Path(qgis_unravel.__file__).parent.parent),
            "backbone": _timed(lambda: detector.backbone(batch), repeats),
            "full forward": _timed(lambda: detector(batch), repeats),
        }


# ---------------------------------------------------------------------------- the run
def extract_tree(rev: str, into: Path) -> Path:
    """``qgis_unravel`` as of ``rev``, unpacked under ``into`` (for PYTHONPATH)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "qgis_unravel"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_child(tree: Path, network: str, variant: str, args: argparse.Namespace) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_bn_folding as b; "
            f"print(json.dumps(b.measure({str(NETWORKS[network])!r}, {variant!r}, {args.size}, "
            f"{args.threads}, {args.repeats})))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{network} / {variant} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(result.pop("tree")).resolve() != tree.resolve():
        raise SystemExit(f"{variant} ran another tree's code than {tree}")
    return result


def report(results: Dict[str, Dict[str, List[Dict[str, Dict[str, float]]]]], variants: List[str]) -> None:
    print(f"\n{'network':<14}{'variant':<14}{'part':<14}{'wall s (min-max)':>18}{'cpu s (min-max)':>18}"
          f"{'cpu vs per-forward':>20}")
    for network, by_variant in results.items():
        for part in ("backbone", "full forward"):
            base = [r[part]["cpu"] for r in by_variant["per-forward"]]
            for variant in variants:
                walls = [r[part]["wall"] for r in by_variant[variant]]
                cpus = [r[part]["cpu"] for r in by_variant[variant]]
                ratios = [c / b for c, b in zip(cpus, base)]  # same round: same machine load
                print(f"{network:<14}{variant:<14}{part:<14}{min(walls):8.3f} - {max(walls):6.3f}"
                      f"{min(cpus):9.3f} - {max(cpus):6.3f}{min(ratios):12.2f} - {max(ratios):.2f}")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="e7a1e8d", help="commit with the per-forward folding (default: "
                        "the last one before folding moved to load time)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per process (median)")
    parser.add_argument("--unfolded", action="store_true", help="also time the unfolded network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    print(f"{args.size} px tiles, {args.threads} threads, {args.rounds} rounds x {args.repeats} forwards; "
          f"before = {args.before}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"per-forward": extract_tree(args.before, Path(tmp)), "unfolded": ROOT, "folded once": ROOT}
        variants = [v for v in VARIANTS if args.unfolded or v != "unfolded"]
        results = {n: {v: [] for v in variants} for n in NETWORKS}
        for round_index in range(args.rounds):
            for network in NETWORKS:
                for variant in variants:
                    results[network][variant].append(run_child(trees[variant], network, variant, args))
            print(f"round {round_index + 1}/{args.rounds} done; load average {os.getloadavg()[0]:.2f}",
                  flush=True)
    report(results, variants)


if __name__ == "__main__":
    main()
