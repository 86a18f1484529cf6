"""Scale-out: the same job with 1 and 2 Dask workers, and in one process (run by hand).

    .venv/bin/python bench/bench_scaleout.py                       # 4 scenes of 1024 px
    .venv/bin/python bench/bench_scaleout.py --scenes 8 --size 2048 --device cuda

Each configuration runs ``qgis-unravel detect SCENES -o OUT --json`` in a fresh process on
the same synthetic GeoTIFF scenes with the project's demo model (or ``--model``): no
``--workers`` (the rasters one after another in this process), then ``--workers 1`` and
``--workers 2``. It prints, side by side, the wall time (cluster start and model loads
included), the tiles per second once the workers are up (from the last progress event),
the 2-worker / 1-worker ratios, and how the runs' features compare (identical when torch
sums in the same order; a worker of a local CPU cluster has fewer torch threads than one
process, which can move scores in the last digits).

On a CPU-only machine the local workers share the cores (each gets cores / N torch
threads), so 2 workers can only win what one process leaves idle (reading, merging); on a
machine with 2 GPUs each worker has its own GPU and the ratio approaches 2. A machine
shared with other jobs gives noisy figures: run it twice and report the range.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
DEMO_MODEL = HERE.parent / "models" / "demo-unravelnet-synthetic.pth"


def make_scenes(folder: Path, count: int, size: int) -> List[Path]:
    from qgis_unravel.synthetic.io import write_scene

    paths = []
    for seed in range(count):
        tif = folder / f"scene{seed:03d}.tif"
        if not tif.exists():
            write_scene(tif, folder / f"labels{seed:03d}.gpkg", seed=100 + seed, size=size)
        paths.append(tif)
    return paths


def run(scenes: List[Path], out: Path, model: str, device: str, tile: int, workers: Optional[int]) -> Dict:
    """One job in a fresh process; wall time, the last progress and the result events."""
    argv = [sys.executable, "-m", "qgis_unravel.app.cli", "detect", *map(str, scenes), "-o", str(out),
            "--model", model, "--device", device, "--tile", str(tile), "--overlap", str(tile // 8), "--json"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=HERE.parent)
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    result = next((e for e in events if e["type"] == "result"), None)
    if done.returncode != 0 or result is None:
        sys.exit(f"run failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    last = [e for e in events if e["type"] == "progress" and e.get("stage") == "tiles"]
    return {"wall_s": wall, "tiles": result["tiles"], "count": result["count"],
            "tiles_per_s": last[-1].get("tiles_per_s") if last else None, "features": features(out)}


def features(path: Path) -> List[tuple]:
    """(source, class, score, centre x, centre y) of every feature, in file order."""
    from osgeo import ogr

    ds = ogr.Open(str(path))
    rows = []
    for f in ds.GetLayer(0):
        centre = f.GetGeometryRef().Centroid()
        rows.append((f["source"], f["class_id"], f["score"], centre.GetX(), centre.GetY()))
    return rows


def compare(a: List[tuple], b: List[tuple]) -> str:
    """'identical', or how far apart two runs' features are (torch's sums depend on threads)."""
    if a == b:
        return "identical"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} features"
    key = sorted(range(len(a)), key=lambda i: a[i][:2] + a[i][3:])
    other = sorted(range(len(b)), key=lambda i: b[i][:2] + b[i][3:])
    classes = all(a[i][:2] == b[j][:2] for i, j in zip(key, other))
    score = max(abs(a[i][2] - b[j][2]) for i, j in zip(key, other))
    where = max(max(abs(a[i][3] - b[j][3]), abs(a[i][4] - b[j][4])) for i, j in zip(key, other))
    return (f"{'same' if classes else 'DIFFERENT'} classes, scores within {score:.1e}, centres within "
            f"{where:.1e} map units")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=512, help="tile size (more, smaller tiles: 512)")
    parser.add_argument("--workdir", help="keep scenes here between runs (default: a temporary folder)")
    args = parser.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(workdir, args.scenes, args.size)
    print(f"{args.scenes} scenes of {args.size} px, model {Path(args.model).name}, device {args.device}, "
          f"{os.cpu_count()} CPUs")
    rows = {}
    for name, workers in (("one process", None), ("1 worker", 1), ("2 workers", 2)):
        out = workdir / f"out-{name.replace(' ', '-')}-{time.time_ns()}.gpkg"
        rows[name] = run(scenes, out, args.model, args.device, args.tile, workers)
        row = rows[name]
        rate = "-" if row["tiles_per_s"] is None else f"{row['tiles_per_s']:.2f}"
        print(f"{name:<12} wall {row['wall_s']:7.1f} s   {rate:>6} tiles/s   {row['tiles']} tiles, "
              f"{row['count']} features")
    one, two = rows["1 worker"], rows["2 workers"]
    print(f"2 workers / 1 worker: wall-time speed-up {one['wall_s'] / two['wall_s']:.2f}, "
          f"tiles/s ratio {two['tiles_per_s'] / one['tiles_per_s']:.2f}")
    print(f"1 worker vs one process: wall-time ratio {rows['one process']['wall_s'] / one['wall_s']:.2f}")
    for name in ("1 worker", "2 workers"):
        difference = compare(rows["one process"]["features"], rows[name]["features"])
        print(f"features of {name} vs one process: {difference}")


if __name__ == "__main__":
    main()
