"""Fault injection: a checkpoint that emits absurdly large boxes cannot exhaust memory in the merge.

The decoder does not clamp sizes (as in mmrotate), so an untrained, poisoned or out-of-domain
model can emit boxes hundreds of thousands of pixels wide. The merge runs in a child process
whose address space is capped at about 1.5 GiB above what numpy and torch need; it must finish.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from qgis_unravel.engine.merge import Detections, TileDetections, merge, nms_across_tiles
from qgis_unravel.engine.windows import tile_grid

CHILD = textwrap.dedent("""
    import resource, sys, time
    import numpy as np, torch
    from qgis_unravel.engine.merge import TileDetections, merge
    from qgis_unravel.engine.windows import tile_grid
    torch.set_num_threads(1)
    def vm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    cap = (vm_kb() + 1536 * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    grid = tile_grid(1024, 1024, 512, 0)
    rng = np.random.default_rng(0)
    parts = []
    for tile in grid.tiles:
        n = {per_tile}
        boxes = np.stack([rng.uniform(0, 512, n), rng.uniform(0, 512, n),
                          rng.uniform(1e4, 6e5, n), rng.uniform(1e3, 3e5, n),
                          rng.uniform(-1.5, 1.5, n)], axis=1)
        parts.append(TileDetections(tile, boxes, rng.uniform(0.05, 1, n).astype(np.float32),
                                    rng.integers(0, 3, n)))
    start = time.monotonic()
    merged = merge(parts, grid, [t.index for t in grid.tiles], 0.1)
    print(len(merged), round(time.monotonic() - start, 1))
""")


@pytest.mark.slow
def test_boxes_far_larger_than_the_raster_merge_within_a_memory_cap():
    done = subprocess.run([sys.executable, "-c", CHILD.format(per_tile=400)], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    kept, _seconds = done.stdout.split()
    assert 0 < int(kept) < 1600


def test_clipping_bounds_to_the_frame_loses_no_suppression():
    """Huge and normal boxes mixed: the bounded merge equals a brute-force greedy NMS."""
    import torch

    from qgis_unravel.ops import box_iou_rotated

    rng = np.random.default_rng(4)
    n = 160
    boxes = np.stack([rng.uniform(0, 600, n), rng.uniform(0, 600, n), rng.uniform(10, 80, n),
                      rng.uniform(5, 40, n), rng.uniform(-1.5, 1.5, n)], axis=1)
    boxes[::7, 2] = rng.uniform(2e4, 5e5, len(boxes[::7]))  # some absurdly long boxes
    scores = rng.uniform(0, 1, n).astype(np.float32)
    labels = rng.integers(0, 2, n)
    dets = Detections(boxes, scores, labels, np.zeros(n, np.int64))
    keep = nms_across_tiles(dets, 0.1, frame=(0.0, 0.0, 600.0, 600.0))
    t = torch.from_numpy(boxes)
    iou = box_iou_rotated(t, t).numpy()
    expected = np.zeros(n, bool)
    removed = np.zeros(n, bool)
    for i in np.lexsort((np.arange(n), -scores)):
        if removed[i]:
            continue
        expected[i] = True
        removed |= (iou[i] > 0.1) & (labels == labels[i])
    assert (keep == expected).all()
    assert 0 < keep.sum() < n


def test_non_finite_boxes_are_dropped_before_the_merge():
    grid = tile_grid(256, 256, 256, 0)
    boxes = np.array([[10, 10, 5, 5, 0], [20, 20, np.nan, 5, 0], [30, 30, np.inf, 4, 0]], float)
    part = TileDetections(grid.tiles[0], boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, int))
    merged = merge([part], grid, [0], 0.1)
    assert len(merged) == 1 and np.isfinite(merged.boxes).all()
