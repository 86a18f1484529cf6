"""Greedy non-maximum suppression that only evaluates the pairs that can matter.

Classic NMS walks boxes by descending score and drops every later box that overlaps a kept one
too much. Its cost is (boxes x kept boxes) overlap tests, each an exact polygon IoU for rotated
boxes. Here the walk goes in blocks of ranks:

1. inside a block, the boxes not yet suppressed are compared with each other (cheap bounding-box
   test first, the exact test only for touching pairs) and the block's own greedy outcome is found
   by a parallel fixed-point pass over the resulting suppression graph;
2. the block's kept boxes are then compared with the later, still unsuppressed boxes that a grid
   index (``spatial.GridIndex``) finds touching them, and suppress them.

The result equals the sequential greedy pass exactly. Everything is tensor code, so it runs the
same on CPU and CUDA, with a few host synchronisations per block, none per box.

On an accelerator, where each kernel launch and host synchronisation costs far more than the
arithmetic of a few thousand boxes, up to ``DEVICE_DENSE_MAX`` boxes are handled as one block:
every touching pair at once (no grid index), the exact test in large chunks, then one copy of the
suppression edges to the host and a sequential walk over them (``walk_edges``). The walk costs
about a microsecond per box; a parallel resolution (``resolve_block``) needs one round per link of
the longest suppression chain, and the RPN's near-identical proposals make chains of thousands.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .spatial import GridIndex

# ``suppresses(i, j)``: for rank indices i < j (same length), whether a kept i removes j.
PairTest = Callable[[Tensor, Tensor], Tensor]

BLOCK = 512
# On accelerators, up to this many boxes take the single-block path (n x n bounds test in row
# chunks; at 8192 boxes the boolean matrix is 64 MiB).
DEVICE_DENSE_MAX = 8192
# Candidate pairs per call of the exact test on the single-block path (bounds its temporaries).
PAIR_CHUNK = 1 << 20
# Rows of the n x n bounds test computed at once on the single-block path.
_ROW_CHUNK = 1024


def _aabb_touch(a: Tensor, b: Tensor) -> Tensor:
    """Dense (len(a), len(b)) mask of axis-aligned boxes (x1, y1, x2, y2) that meet or touch."""
    return (
        (a[:, None, 0] <= b[None, :, 2])
        & (b[None, :, 0] <= a[:, None, 2])
        & (a[:, None, 1] <= b[None, :, 3])
        & (b[None, :, 1] <= a[:, None, 3])
    )


def resolve_block(n: int, src: Tensor, dst: Tensor) -> Tensor:
    """Greedy outcome of n ranked boxes given suppression edges src -> dst (src < dst).

    A box is kept iff no kept box suppresses it. Each round decides every box whose possible
    suppressors are all decided; the lowest undecided rank always qualifies, so it terminates.
    """
    device = src.device
    undecided, kept, removed = 0, 1, 2
    state = torch.zeros(n, dtype=torch.int8, device=device)
    if src.numel() == 0:
        return torch.ones(n, dtype=torch.bool, device=device)
    while True:
        open_nodes = state == undecided
        if not bool(open_nodes.any()):
            break
        src_state = state[src]
        hit = torch.zeros(n, dtype=torch.bool, device=device)
        hit[dst[src_state == kept]] = True
        waiting = torch.zeros(n, dtype=torch.bool, device=device)
        waiting[dst[src_state == undecided]] = True
        state = torch.where(open_nodes & hit, torch.full_like(state, removed), state)
        state = torch.where(open_nodes & ~hit & ~waiting, torch.full_like(state, kept), state)
    return state == kept


def _block_pairs(aabb: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs (i < j) of active ranks in one block whose bounding boxes touch."""
    box = aabb[active]
    touch = torch.triu(_aabb_touch(box, box), diagonal=1)
    ii, jj = torch.nonzero(touch, as_tuple=True)
    return ii, jj


def _suppress_later(
    index: GridIndex, kept: Tensor, first_later: int, suppresses: PairTest, suppressed: Tensor
) -> None:
    """Mark in ``suppressed`` every later, still-live rank that a rank in ``kept`` suppresses.

    Touching pairs come in bounded steps, so memory does not grow with how many boxes overlap.
    """
    for q, j in index.touching_steps(kept):
        live = (j >= first_later) & ~suppressed[j]
        q, j = q[live], j[live]
        if q.numel():
            hit = suppresses(q, j)
            suppressed[j[hit]] = True


def prefers_dense(device: torch.device, n: int) -> bool:
    """Whether ``n`` boxes on ``device`` take the single-block path by default (accelerators)."""
    return device.type != "cpu" and n <= DEVICE_DENSE_MAX


def _touching_pairs(aabb: Tensor) -> tuple[Tensor, Tensor]:
    """All rank pairs (i < j) whose bounds meet or touch, as two index tensors sorted by (i, j)."""
    n = aabb.shape[0]
    firsts, seconds = [], []
    for r0 in range(0, n, _ROW_CHUNK):
        r1 = min(r0 + _ROW_CHUNK, n)
        touch = torch.triu(_aabb_touch(aabb[r0:r1], aabb), diagonal=r0 + 1)
        ii, jj = torch.nonzero(touch, as_tuple=True)
        firsts.append(ii + r0)
        seconds.append(jj)
    return torch.cat(firsts), torch.cat(seconds)


def walk_edges(n: int, src: Tensor, dst: Tensor) -> Tensor:
    """Greedy outcome of n ranked boxes given suppression edges src -> dst (src < dst, src
    ascending, as ``_touching_pairs`` lists them), walked in rank order on the host: a box is kept
    unless a kept box suppresses it. Returns kept ranks."""
    src_np = src.cpu().numpy()
    dst_np = dst.cpu().numpy()
    starts = np.searchsorted(src_np, np.arange(n + 1)).tolist()
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        a, b = starts[i], starts[i + 1]
        if a != b:
            removed[dst_np[a:b]] = True
    return torch.tensor(keep, dtype=torch.long, device=src.device)


def dense_greedy_keep(aabb: Tensor, suppresses: PairTest) -> Tensor:
    """``greedy_keep`` as one block: the kept ranks from every touching pair tested at once.

    A handful of kernel launches and host synchronisations whatever the number of boxes, at the
    price of an n x n bounds test: the right trade on an accelerator for up to a few thousand
    boxes, the wrong one on a CPU.
    """
    n = aabb.shape[0]
    device = aabb.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    ii, jj = _touching_pairs(aabb)
    if ii.numel():
        hit = torch.cat([suppresses(ii[s:s + PAIR_CHUNK], jj[s:s + PAIR_CHUNK])
                         for s in range(0, ii.numel(), PAIR_CHUNK)])
        ii, jj = ii[hit], jj[hit]
    return walk_edges(n, ii, jj)


def greedy_keep(aabb: Tensor, suppresses: PairTest, block: int | None = None,
                frame: tuple[float, float, float, float] | None = None,
                dense: bool | None = None) -> Tensor:
    """Greedy NMS over boxes already sorted by descending score; returns the kept ranks.

    Args:
        aabb: (N, 4) axis-aligned bounds (x1, y1, x2, y2) of the boxes in rank order. Two boxes
            whose bounds do not touch must never suppress each other.
        suppresses: exact test for candidate pairs of ranks (i < j).
        block: ranks handled together; larger blocks mean fewer synchronisations but more
            wasted pair tests inside a block (default ``BLOCK``).
        frame: (x1, y1, x2, y2) that every box meets (e.g. the raster); bounds are clipped to it,
            which bounds the index's memory for absurdly large boxes and loses no pair.
        dense: take the single-block path (``dense_greedy_keep``); by default on accelerators
            for up to ``DEVICE_DENSE_MAX`` boxes. The kept ranks are the same either way.
    """
    n = aabb.shape[0]
    device = aabb.device
    if dense is None:
        dense = prefers_dense(device, n)
    if dense:
        return dense_greedy_keep(aabb, suppresses)
    block = BLOCK if block is None else block
    index = GridIndex(aabb, frame)
    aabb = index.aabb
    suppressed = torch.zeros(n, dtype=torch.bool, device=device)
    kept_all: list[Tensor] = []
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        active = torch.nonzero(~suppressed[r0:r1], as_tuple=True)[0] + r0
        if active.numel() == 0:
            continue
        ii, jj = _block_pairs(aabb, active)
        if ii.numel():
            hit = suppresses(active[ii], active[jj])
            ii, jj = ii[hit], jj[hit]
        kept = active[resolve_block(active.numel(), ii, jj)]
        kept_all.append(kept)
        if r1 < n:
            _suppress_later(index, kept, r1, suppresses, suppressed)
    if not kept_all:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(kept_all)
