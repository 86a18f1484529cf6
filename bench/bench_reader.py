"""Tiles per second the reader delivers (window read + DEFLATE decode + stretch), 1 vs N threads.

    .venv/bin/python bench/bench_reader.py                   # 8192 x 8192, 1024 px tiles, 1 and 4 threads
    .venv/bin/python bench/bench_reader.py --threads 1 2 4 --rounds 3

A GPU takes 1024 x 1024 tiles at 50 per second or more (bench/gpu_check.sh measures it), so the
reader must deliver at least that or the GPU waits. This times the engine's own ``Prefetcher``
(the reading threads ``detect_raster`` uses, each with its own dataset handle) over every tile
of an 8192 x 8192 GeoTIFF like ``bench_detect.py``'s (RGB uint8, DEFLATE, 512-pixel blocks), with
nothing consuming the tiles but a counter, and the thread counts interleaved round by round.
The machine's core count and load are printed: reading scales with free cores, so on a shared
2-core machine the figure is a floor for a GPU machine's 16 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from qgis_unravel.engine.raster import describe, open_dataset  # noqa: E402
from qgis_unravel.engine.reader import Prefetcher, limit_block_cache, processing_grid  # noqa: E402
from qgis_unravel.engine.scaling import choose_scaling  # noqa: E402
from qgis_unravel.engine.windows import tile_grid  # noqa: E402

TARGET_TILES_PER_S = 50.0
BLOCK = 512


def make_raster(path: Path, size: int, seed: int = 0) -> Path:
    """A size x size RGB uint8 GeoTIFF, DEFLATE, 512-pixel blocks, like bench_detect's raster
    (smooth background, sensor noise, bright rectangles) but built from 16 distinct blocks laid
    out in a shuffled pattern, so that it is written in seconds; decoding costs the same."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:BLOCK, 0:BLOCK]
    blocks = []
    for _ in range(16):
        dx, dy = rng.uniform(0, 5000, 2)
        base = 90 + 30 * np.sin((xx + dx) / 700.0) + 20 * np.cos((yy + dy) / 500.0)
        img = np.repeat(base[..., None], 3, axis=2) + rng.normal(0, 8, (BLOCK, BLOCK, 3))
        for _ in range(6):
            cx, cy, a = rng.uniform(0, BLOCK), rng.uniform(0, BLOCK), rng.uniform(-1.5, 1.5)
            u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
            v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
            img[(abs(u) < rng.uniform(5, 30)) & (abs(v) < rng.uniform(3, 10))] = rng.uniform(150, 255, 3)
        blocks.append(np.moveaxis(np.clip(img, 0, 255).astype(np.uint8), -1, 0))
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 0.3, 0.3), tiled=True, blockxsize=BLOCK,
                   blockysize=BLOCK, compress="deflate", photometric="RGB")
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        for y0 in range(0, size, BLOCK):
            for x0 in range(0, size, BLOCK):
                h, w = min(BLOCK, size - y0), min(BLOCK, size - x0)
                block = blocks[int(rng.integers(len(blocks)))][:, :h, :w]
                ds.write(block, window=Window(x0, y0, w, h))
    tmp.rename(path)
    return path


def read_all(path: Path, tile: int, overlap: int, threads: int,
             limit: Optional[int]) -> Tuple[float, float, int]:
    """Wall and process CPU seconds to read and stretch every tile (or the first ``limit``)
    with ``threads`` threads, and the number of tiles."""
    with open_dataset(path) as ds:
        info = describe(ds, None)
        scaling = choose_scaling(ds, info.bands, None)
    pgrid = processing_grid(info.width, info.height, None, None)
    tiles = tile_grid(pgrid.width, pgrid.height, tile, overlap).tiles[:limit]
    t0, c0 = time.perf_counter(), time.process_time()
    count = 0
    depth = 2 * threads + 2
    with Prefetcher(info.path, info.bands, scaling, pgrid, tiles, depth=depth, threads=threads) as it:
        for _tile, image in it:
            count += image is not None
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert count == len(tiles)
    return elapsed, cpu, len(tiles)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="read only the first N tiles")
    parser.add_argument("--scratch", default=None, help="folder for the generated raster (kept)")
    args = parser.parse_args(argv)

    scratch = Path(args.scratch or tempfile.gettempdir()) / "qgis_unravel_bench"
    scratch.mkdir(parents=True, exist_ok=True)
    path = make_raster(scratch / f"reader_{args.size}.tif", args.size)
    limit_block_cache()
    print(f"{path.name}: {args.size} x {args.size} RGB uint8 DEFLATE; "
          f"tiles {args.tile} overlap {args.overlap}; "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rates: Dict[int, List[float]] = {t: [] for t in args.threads}
    cpu_ms: Dict[int, List[float]] = {t: [] for t in args.threads}
    for _ in range(args.rounds):
        for threads in args.threads:
            seconds, cpu, n = read_all(path, args.tile, args.overlap, threads, args.limit)
            rates[threads].append(n / seconds)
            cpu_ms[threads].append(1000 * cpu / n)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = statistics.median(rates[args.threads[0]])
    print(f"{'threads':>8}{'tiles/s median':>16}{'min':>8}{'max':>8}{'vs first':>10}{'vs 50/s':>9}"
          f"{'CPU ms/tile':>13}")
    for threads, r in rates.items():
        med = statistics.median(r)
        print(f"{threads:>8}{med:16.1f}{min(r):8.1f}{max(r):8.1f}{med / base:10.2f}"
              f"{med / TARGET_TILES_PER_S:9.2f}{statistics.median(cpu_ms[threads]):13.1f}")
    print("CPU ms/tile is process CPU time (all threads) per tile: on a machine with free cores, "
          "k threads deliver up to k x 1000 / (CPU ms/tile) tiles/s")


if __name__ == "__main__":
    main()
