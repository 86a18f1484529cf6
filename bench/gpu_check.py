"""The CUDA path in one call: parity, mixed precision, batching, end-to-end, torch.compile.

Run through ``bench/gpu_check.sh`` (which finds or installs a CUDA torch first):

    bash bench/gpu_check.sh                  # on a GPU machine: the whole check, under ~8 minutes
    bash bench/gpu_check.sh --cpu-dry-run    # here and in CI: every step on CPU, tiny sizes

Steps, each bounded in time and independent (a failing step is reported, the others still run):

1. runtime: GPU name, driver, CUDA and torch versions, free memory (as the worker's hello says);
2. parity: the project's golden parity tests with ``QGIS_UNRAVEL_TEST_DEVICE`` set to the device;
3. amp-golden: fp16 and bf16 autocast against float32 on the golden UnravelNet and LEGNet models
   (largest box and score differences of matched detections, detection counts);
4. amp-demo: the same on the demo model's held-out scenes, as an mAP difference;
5. throughput: network-only tiles/s and peak memory at batch 1/2/4/8/16 for UnravelNet-T/S and
   LEGNet-T/S (random weights, 1024 x 1024), float32 and the fastest autocast;
6. end-to-end: ``detect_raster`` on an 8192 x 8192 GeoTIFF (automatic batch and reading threads)
   against the network alone on the same tiles held in memory (ratio);
7. compile: ``torch.compile`` of backbone and FPN: first-call cost and steady-state gain.

The summary is printed last and written to ``--out`` (default ``$OUT`` when set) and to
``bench/results/gpu_check-<date>.txt`` (``--cpu-dry-run``: ``gpu_check-dry-run.txt`` under
``--out`` only, nothing in the repository).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

PARITY_TESTS = ["tests/test_detector_parity.py", "tests/test_ops_nms.py"]  # whole detectors; NMS paths
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Check:
    """Runs named steps under one time budget and collects their summary lines."""

    def __init__(self, budget_s: float):
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.lines: List[str] = []
        self.data: Dict[str, Any] = {}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def step(self, name: str, fn: Callable[[], List[str]], needs_s: float = 0.0) -> None:
        if self.left() < needs_s:
            self.lines.append(f"[{name}] skipped: {self.left():.0f} s of the budget left, "
                              f"needs ~{needs_s:.0f}")
            return
        t0 = time.monotonic()
        print(f"--- {name} ({self.left():.0f} s of the budget left)", flush=True)
        try:
            out = fn()
            status = "ok"
        except Exception as exc:
            traceback.print_exc()
            out, status = [f"FAILED: {type(exc).__name__}: {str(exc)[:300]}"], "failed"
        self.lines.append(f"[{name}] {status} in {time.monotonic() - t0:.1f} s")
        self.lines.extend(f"  {line}" for line in out)
        for line in out:
            print(f"  {line}", flush=True)


# ---- models --------------------------------------------------------------------------------

def golden_dir() -> Path:
    """The project's golden data (tests/golden), checkpoints decompressed once to a temp folder."""
    sys.path.insert(0, str(ROOT / "tests"))
    import golden_data

    return golden_data.expanded()


LEAN_PROPOSALS: Optional[int] = None  # the dry run caps the RPN's proposals: plumbing, not figures


def random_detector(keys_file: Path, device: str, seed: int = 0) -> Any:
    """A full-size detector built from a golden key list, random weights, eval mode, fast."""
    from bench_network import detector_from_keys

    detector = detector_from_keys(keys_file, seed)
    detector.fast = True
    if LEAN_PROPOSALS:
        detector.rpn_nms_pre = detector.rpn_max_proposals = LEAN_PROPOSALS
    return detector.to(device).eval()


NETWORKS = {
    "UnravelNet-T": "state_dict_keys_tiny.txt",
    "UnravelNet-S": "state_dict_keys_small.txt",
    "LEGNet-T": "legnet/state_dict_keys_legnet_tiny.txt",
    "LEGNet-S": "legnet/state_dict_keys_legnet_small.txt",
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def autocast(device: str, name: Optional[str]) -> contextlib.AbstractContextManager:
    if name is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AMP_DTYPES[name])


def few_candidates(detector: Any, batch: torch.Tensor, wanted: int = 64) -> None:
    """Random weights score every box alike: keep about ``wanted`` candidates, as a trained model."""
    from bench_network import calibrate

    from qgis_unravel.detector.roi_head import rois_from_proposals

    with torch.inference_mode():
        feats = detector.extract_feat(batch)
        rois = rois_from_proposals(detector.rpn_head.proposals(*detector.rpn_head(feats)))
        detector.roi_head.test_cfg.score_thr = calibrate(detector, feats, rois, wanted)


# ---- steps ---------------------------------------------------------------------------------

def step_runtime(device: str) -> List[str]:
    from qgis_unravel.app.worker import describe_runtime

    hello = describe_runtime()
    lines = [f"python {hello['python']}, torch {hello['torch']}, CUDA build {hello.get('cuda_version')}, "
             f"driver {hello.get('driver') or '-'}, device asked: {device}"]
    for d in hello.get("devices", []):
        lines.append(f"GPU {d['index']}: {d['name']}, {d.get('free_mb')} MiB free "
                     f"of {d.get('total_mb')} MiB, "
                     f"compute capability {d.get('capability')}")
    if not hello.get("devices"):
        lines.append("no CUDA GPU visible")
    return lines


def step_parity(device: str, dry: bool) -> List[str]:
    env = {**os.environ, "QGIS_UNRAVEL_TEST_DEVICE": device}
    tests = ["tests/test_detector_parity.py", "-k", "normalisation"] if dry else PARITY_TESTS
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    out = [f"device {device}: pytest exit {proc.returncode}: {tail[0]}"] + failures[:10]
    if proc.returncode not in (0,):
        print(proc.stdout[-4000:], proc.stderr[-2000:])
    return out


def match_detections(ref: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor]) -> Tuple[float, float, int]:
    """Largest |box| (x, y, w, h) and score difference over reference detections matched to the
    nearest same-class detection of ``got``, and how many reference boxes found none within 8 px."""
    rb, rs, rl = (ref[k].float().cpu() for k in ("boxes", "scores", "labels"))
    gb, gs, gl = (got[k].float().cpu() for k in ("boxes", "scores", "labels"))
    box_diff = score_diff = 0.0
    unmatched = 0
    for i in range(len(rs)):
        same = (gl == rl[i]).nonzero().flatten()
        if len(same) == 0:
            unmatched += 1
            continue
        dist = (gb[same, :2] - rb[i, :2]).norm(dim=1)
        j = same[int(dist.argmin())]
        if float(dist.min()) > 8.0:
            unmatched += 1
            continue
        box_diff = max(box_diff, float((gb[j, :4] - rb[i, :4]).abs().max()))
        score_diff = max(score_diff, float((gs[j] - rs[i]).abs()))
    return box_diff, score_diff, unmatched


def step_amp_golden(device: str, dtypes: Sequence[str], dry: bool = False) -> List[str]:
    from qgis_unravel.detector.checkpoint import load_detector

    gd = golden_dir()

    def golden_thr(info: str) -> float:  # the score threshold of the golden run
        return float(json.loads((gd / info).read_text())["score_thr"])

    models = {"UnravelNet (golden reduced)": ("reduced_model.pth", "reduced_model_io.npz",
                                              golden_thr("reduced_model_info.json")),
              "LEGNet (golden reduced)": ("legnet/legnet_reduced_model.pth",
                                          "legnet/legnet_reduced_model_io.npz",
                                          golden_thr("legnet/legnet_reduced_model_info.json"))}
    if dry:  # one model with fewer proposals: the plumbing, not the figures
        models = dict(list(models.items())[:1])
    lines = []
    for name, (ckpt, io_name, thr) in models.items():
        det = load_detector(gd / ckpt, device=device)
        det.roi_head.test_cfg.score_thr = thr
        if LEAN_PROPOSALS:
            det.rpn_nms_pre = det.rpn_max_proposals = LEAN_PROPOSALS
        batch = torch.from_numpy(np.load(gd / io_name)["input"])[None].to(device)
        with torch.inference_mode():
            ref = det(batch)[0]
            for dt in dtypes:
                with autocast(device, dt):
                    got = det(batch)[0]
                box, score, unmatched = match_detections(ref, got)
                lines.append(f"{name} {dt} vs fp32: {len(got['scores'])}/{len(ref['scores'])} detections, "
                             f"max box diff {box:.3g} px, max score diff {score:.3g}, unmatched {unmatched}")
    return lines


def step_amp_demo(device: str, dtypes: Sequence[str], seeds: Sequence[int], size: int) -> List[str]:
    from qgis_unravel.detector.checkpoint import load_detector
    from qgis_unravel.paths import models_dir
    from qgis_unravel.synthetic import make_scene
    from qgis_unravel.training.evaluate import ImageDetections, ImageTruth, evaluate

    card = json.loads((models_dir() / "demo-unravelnet-synthetic.json").read_text())
    det = load_detector(models_dir() / card["weights"]["path"], device=device)
    scenes = [make_scene(seed, size) for seed in seeds]
    truths = [ImageTruth(s.boxes, s.labels) for s in scenes]
    maps = {}
    for dt in [None, *dtypes]:
        with autocast(device, dt):
            outs = det.predict([s.image for s in scenes], batch_size=len(scenes))
        dets = [ImageDetections(o["boxes"], o["scores"], o["labels"]) for o in outs]
        maps[dt or "fp32"] = evaluate(dets, truths, det.classes).mean_ap
    lines = [f"demo model, {len(scenes)} held-out scene(s) of {size} px (seeds {seeds[0]}-{seeds[-1]}): "
             f"mAP fp32 {maps['fp32']:.4f}"]
    lines += [f"  {dt}: mAP {maps[dt]:.4f} (difference {maps[dt] - maps['fp32']:+.4f})" for dt in dtypes]
    return lines


def time_batches(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_throughput(check: Check, device: str, networks: Sequence[str], sizes: Sequence[int], tile: int,
                    amp: Optional[str], repeats: int) -> List[str]:
    from bench_network import make_input

    gd = golden_dir()
    lines = [f"{'network':<14}{'precision':>10}{'batch':>6}{'tiles/s':>9}{'peak MiB':>10}{'MiB/tile':>10}"]
    one = make_input(tile).to(device)
    for name in networks:
        det = random_detector(gd / NETWORKS[name], device)
        few_candidates(det, one)
        for precision in [None, amp] if amp else [None]:
            for b in sizes:
                if check.left() < 30:
                    lines.append(f"{name}: stopped, budget nearly spent")
                    return lines
                batch = one.expand(b, -1, -1, -1).contiguous()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                try:
                    with torch.inference_mode(), autocast(device, precision):
                        s = time_batches(lambda det=det, batch=batch: det(batch), device, repeats)
                except torch.cuda.OutOfMemoryError:
                    lines.append(f"{name:<14}{precision or 'fp32':>10}{b:>6}  out of memory")
                    break
                peak = 0.0
                if device.startswith("cuda"):
                    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                lines.append(f"{name:<14}{precision or 'fp32':>10}{b:>6}{b / s:9.2f}"
                             f"{peak:10.0f}{peak / b:10.0f}")
    return lines


def step_end_to_end(device: str, raster_size: int, tile: int, amp: str, scratch: Path) -> List[str]:
    from bench_detect import make_raster

    from qgis_unravel.engine.detect import detect_raster
    from qgis_unravel.engine.raster import describe, open_dataset
    from qgis_unravel.engine.reader import TileReader, processing_grid
    from qgis_unravel.engine.scaling import choose_scaling
    from qgis_unravel.engine.spec import RunSpec
    from qgis_unravel.engine.windows import tile_grid

    path = make_raster(scratch / f"e2e_{raster_size}.tif", raster_size)
    det = random_detector(golden_dir() / NETWORKS["UnravelNet-T"], device)
    from bench_network import make_input

    few_candidates(det, make_input(tile).to(device))
    options = RunSpec(tile_size=tile, overlap=tile // 5, amp=amp)
    detect_raster(path, det, RunSpec(tile_size=tile, overlap=tile // 5, amp=amp,
                                           aoi=_corner_aoi(path, tile)))  # warm-up: cudnn, allocator
    sync(device)
    t0 = time.perf_counter()
    result = detect_raster(path, det, options)
    e2e_s = time.perf_counter() - t0
    with open_dataset(path) as ds:
        info = describe(ds, None)
        scaling = choose_scaling(ds, info.bands, None)
        grid = tile_grid(info.width, info.height, tile, tile // 5)
        reader = TileReader(ds, info.bands, scaling, processing_grid(info.width, info.height, None, None))
        images = [reader.read(t) for t in grid.tiles]
    from qgis_unravel.engine.batching import resolve_batch_size
    from qgis_unravel.engine.precision import resolve_amp

    b = resolve_batch_size(None, device, tile, resolve_amp(amp, device, "unravelnet") is not None)
    sync(device)
    t0 = time.perf_counter()
    with autocast(device, resolve_amp(amp, device, "unravelnet")):
        for i in range(0, len(images), b):
            det.predict(images[i:i + b], batch_size=b, on_device=True)
    sync(device)
    net_s = time.perf_counter() - t0
    n = len(images)
    return [f"{raster_size} x {raster_size} GeoTIFF, {n} tiles of {tile} px, batch {b} (automatic), "
            f"amp {amp}: "
            f"end-to-end {n / e2e_s:.2f} tiles/s ({e2e_s:.1f} s, {len(result)} detections), "
            f"network alone {n / net_s:.2f} tiles/s, ratio {net_s / e2e_s:.2f}"]


def _corner_aoi(path: Path, tile: int) -> str:
    import rasterio

    with rasterio.open(path) as ds:
        x0, y1 = ds.transform * (0, 0)
        x1, y0 = ds.transform * (tile, tile)
    return f"{x0},{y0},{x1},{y1}"


def step_compile(device: str, tile: int, batch_size: int, repeats: int, timeout_s: float) -> List[str]:
    from bench_network import make_input

    det = random_detector(golden_dir() / NETWORKS["UnravelNet-T"], device)
    one = make_input(tile).to(device)
    few_candidates(det, one)
    batch = one.expand(batch_size, -1, -1, -1).contiguous()
    with torch.inference_mode():
        eager = time_batches(lambda: det(batch), device, repeats)
        det.backbone = torch.compile(det.backbone)
        det.neck = torch.compile(det.neck)
        t0 = time.perf_counter()
        det(batch)
        sync(device)
        first = time.perf_counter() - t0
        if first > timeout_s:
            return [f"first compiled call took {first:.0f} s (> {timeout_s:.0f} s): not timed further"]
        compiled = time_batches(lambda: det(batch), device, repeats)
    return [f"UnravelNet-T, batch {batch_size}, {tile} px: eager {batch_size / eager:.2f} tiles/s, "
            f"compiled {batch_size / compiled:.2f} tiles/s (x{eager / compiled:.2f}), "
            f"compilation cost {first:.1f} s (first call)"]


# ---- main ----------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="every step on CPU with tiny sizes")
    parser.add_argument("--device", default=None, help="cuda, cuda:N (default cuda; cpu for the dry run)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time budget in seconds (default 420; the dry run has none)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for the summary file")
    parser.add_argument("--no-commit-copy", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)

    dry = args.cpu_dry_run
    global LEAN_PROPOSALS
    LEAN_PROPOSALS = 100 if dry else None
    device = args.device or ("cpu" if dry else "cuda")
    if not dry and not (device.startswith("cuda") and torch.cuda.is_available()):
        print("no CUDA GPU visible to this torch: run with --cpu-dry-run, or on a GPU machine")
        return 2
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    check = Check(args.budget_s or (float("inf") if dry else 420.0))  # a dry run does every step
    dtypes = ["bf16"] if dry else ["fp16", "bf16"]
    tile = 128 if dry else 1024
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))

    check.step("runtime", lambda: step_runtime(device))
    check.step("parity", lambda: step_parity(device, dry), needs_s=30)
    check.step("amp-golden", lambda: step_amp_golden(device, dtypes, dry), needs_s=10)
    check.step("amp-demo", lambda: step_amp_demo(device, dtypes, [6001] if dry else list(range(6001, 6009)),
                                                  256 if dry else 1024), needs_s=20)
    check.step("throughput", lambda: step_throughput(
        check, device, ["UnravelNet-T"] if dry else list(NETWORKS), [1, 2] if dry else [1, 2, 4, 8, 16],
        tile, "bf16" if not dry else None, 1 if dry else 5), needs_s=30)
    check.step("end-to-end", lambda: step_end_to_end(device, 384 if dry else 8192, tile,
                                                     "off" if dry else "auto", scratch), needs_s=30)
    if dry:
        check.lines.append("[compile] skipped in the dry run "
                           "(bench/bench_cpu_variants.py measures it on CPU)")
    else:
        check.step("compile", lambda: step_compile(device, tile, 8, 5, 180), needs_s=120)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [f"qgis-unravel GPU check ({'CPU DRY RUN: no GPU figure below' if dry else 'GPU'}), {stamp}, "
              f"{time.monotonic() - check.started:.0f} s"]
    summary = "\n".join(header + check.lines) + "\n"
    print("\n===== SUMMARY =====\n" + summary, flush=True)
    name = "gpu_check-dry-run.txt" if dry else f"gpu_check-{stamp[:10]}.txt"
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / name).write_text(summary)
    if not dry and not args.no_commit_copy:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / name).write_text(summary)
    failed = any("] failed" in line for line in check.lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
