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
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .spatial import GridIndex

# ``suppresses(i, j)``: for rank indices i < j (same length), whether a kept i removes j.
PairTest = Callable[[Tensor, Tensor], Tensor]

BLOCK = 512


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


def greedy_keep(aabb: Tensor, suppresses: PairTest, block: int | None = None,
                frame: tuple[float, float, float, float] | None = None) -> Tensor:
    """Greedy NMS over boxes already sorted by descending score; returns the kept ranks.

    Args:
        aabb: (N, 4) axis-aligned bounds (x1, y1, x2, y2) of the boxes in rank order. Two boxes
            whose bounds do not touch must never suppress each other.
        suppresses: exact test for candidate pairs of ranks (i < j).
        block: ranks handled together; larger blocks mean fewer synchronisations but more
            wasted pair tests inside a block (default ``BLOCK``).
        frame: (x1, y1, x2, y2) that every box meets (e.g. the raster); bounds are clipped to it,
            which bounds the index's memory for absurdly large boxes and loses no pair.
    """
    block = BLOCK if block is None else block
    n = aabb.shape[0]
    device = aabb.device
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
