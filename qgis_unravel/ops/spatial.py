"""A uniform-grid index of axis-aligned boxes, to find touching pairs without an N x N test.

Every box is registered in each grid cell its bounds cover; two boxes can only touch if they share
a cell. A pair sharing several cells is reported once: for the cell holding the lower-left corner
of the two bounds' overlap. All of it is tensor code (sort, searchsorted, repeat_interleave), so it
runs unchanged on CPU and CUDA.

Memory is bounded whatever the boxes (this is the one place that guarantees it for every NMS):

- bounds may be clipped to a ``frame`` (the raster or tile being processed). A decoder emits boxes
  hundreds of thousands of pixels wide when a checkpoint is untrained or poisoned; clipped, they
  cover at most the frame. No touching pair is lost when every box meets the frame (its centre
  lies in it): three axis-aligned rectangles that meet pairwise share a point.
- the grid is coarsened until the cells covered stay within a few per box;
- candidates are enumerated, tested and handed on in steps of ``_ENUM_BUDGET``
  (``touching_steps``), so even n boxes that all touch never need n x n memory at once.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

# Pair candidates enumerated per step of a query; bounds the temporaries.
_ENUM_BUDGET = 1 << 21
# A box may cover at most about this many cells on average before the grid is coarsened.
_CELLS_PER_BOX = 4


def _touch(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise: do bounds a[k] and b[k] (x1, y1, x2, y2) meet or touch?"""
    return (a[:, 0] <= b[:, 2]) & (b[:, 0] <= a[:, 2]) & (a[:, 1] <= b[:, 3]) & (b[:, 1] <= a[:, 3])


def _ranges(start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten the integer ranges [start[k], start[k] + count[k]): (owner k, value) per element."""
    owner = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)
    first = torch.cumsum(count, 0) - count
    value = start[owner] + torch.arange(owner.numel(), device=count.device) - first[owner]
    return owner, value


def clip_to_frame(aabb: Tensor, frame: tuple[float, float, float, float] | None) -> Tensor:
    """Bounds (N, 4) clipped to ``frame`` (x1, y1, x2, y2); unchanged when frame is None."""
    if frame is None or aabb.shape[0] == 0:
        return aabb
    x1, y1, x2, y2 = (float(v) for v in frame)
    low = aabb.new_tensor([x1, y1, x1, y1])
    high = aabb.new_tensor([x2, y2, x2, y2])
    return torch.minimum(torch.maximum(aabb, low), high)


class GridIndex:
    """Grid over the bounds ``aabb`` (N, 4); ``touching(queries)`` lists overlapping pairs."""

    def __init__(self, aabb: Tensor, frame: tuple[float, float, float, float] | None = None) -> None:
        aabb = clip_to_frame(aabb, frame)
        self.aabb = aabb
        n = aabb.shape[0]
        device = aabb.device
        size = torch.maximum(aabb[:, 2] - aabb[:, 0], aabb[:, 3] - aabb[:, 1])
        finite = torch.isfinite(aabb).all(1)
        sane = aabb[finite] if bool(finite.any()) else aabb.new_zeros((1, 4))
        self.origin = sane[:, :2].amin(0)
        cell = float(size[finite].median()) if bool(finite.any()) else 1.0
        span = float((sane[:, 2:].amax(0) - self.origin).max())
        # At most ~4096 cells across, so keys stay small; non-finite boxes land in cell 0.
        cell = max(cell, span / 4096.0, 1e-6)
        while True:
            lo, hi = self._cells(aabb, cell)
            covered = ((hi - lo + 1).prod(1)) if n else torch.zeros(0, dtype=torch.long, device=device)
            if n == 0 or int(covered.sum()) <= _CELLS_PER_BOX * n + 64:
                break
            cell *= 2.0
        self.cell = cell
        self.lo, self.hi = lo, hi
        self.columns = int(hi[:, 0].max()) + 1 if n else 1
        owner, keys = self._cover(torch.arange(n, device=device))
        keys, order = torch.sort(keys, stable=True)
        self.keys = keys
        self.members = owner[order]

    def _cells(self, aabb: Tensor, cell: float) -> tuple[Tensor, Tensor]:
        # Boxes with non-finite bounds get cell 0 only: their exact tests are NaN, so they
        # neither suppress nor get suppressed anyway.
        finite = torch.isfinite(aabb).all(1, keepdim=True)
        lo = torch.where(finite, torch.floor((aabb[:, :2] - self.origin) / cell), 0.0)
        hi = torch.where(finite, torch.floor((aabb[:, 2:] - self.origin) / cell), 0.0)
        lo, hi = lo.clamp(min=0).long(), hi.clamp(min=0).long()
        return lo, torch.maximum(hi, lo)

    def _cover(self, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """(box, cell key) for every cell covered by each of ``boxes`` (indices into aabb)."""
        lo, hi = self.lo[boxes], self.hi[boxes]
        span = hi - lo + 1
        owner, offset = _ranges(torch.zeros_like(boxes), span[:, 0] * span[:, 1])
        gx = lo[owner, 0] + offset % span[owner, 0]
        gy = lo[owner, 1] + offset // span[owner, 0]
        return boxes[owner], gy * self.columns + gx

    def touching(self, queries: Tensor) -> tuple[Tensor, Tensor]:
        """All pairs (q, j), q in ``queries``, j any indexed box other than q, whose bounds touch.

        Each pair appears once. The result can be as large as the pairs that really touch; use
        ``touching_steps`` to consume them in bounded pieces.
        """
        out_q, out_j = [], []
        for q, j in self.touching_steps(queries):
            out_q.append(q)
            out_j.append(j)
        if not out_q:
            empty = torch.zeros(0, dtype=torch.long, device=queries.device)
            return empty, empty
        return torch.cat(out_q), torch.cat(out_j)

    def touching_steps(self, queries: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """The pairs of ``touching``, in steps of at most ``_ENUM_BUDGET`` candidates each."""
        owner, keys = self._cover(queries)
        start = torch.searchsorted(self.keys, keys)
        count = torch.searchsorted(self.keys, keys, right=True) - start
        total = torch.cumsum(count, 0)
        begin = 0
        n_entries = int(count.numel())
        while begin < n_entries:
            base = int(total[begin - 1]) if begin else 0
            end = int(torch.searchsorted(total, base + _ENUM_BUDGET, right=True))
            end = min(max(end, begin + 1), n_entries)
            yield from self._pairs_split(owner[begin:end], keys[begin:end], start[begin:end],
                                         count[begin:end])
            begin = end

    def _pairs_split(self, owner: Tensor, keys: Tensor, start: Tensor,
                     count: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """``_pairs_in``, cutting a single cell whose members alone exceed the budget into pieces."""
        if owner.numel() > 1 or int(count.sum()) <= _ENUM_BUDGET:
            yield self._pairs_in(owner, keys, start, count)
            return
        first, size = int(start[0]), int(count[0])
        for offset in range(0, size, _ENUM_BUDGET):
            piece = min(_ENUM_BUDGET, size - offset)
            yield self._pairs_in(owner, keys, start.new_tensor([first + offset]), count.new_tensor([piece]))

    def _pairs_in(self, owner: Tensor, keys: Tensor, start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        which, pos = _ranges(start, count)
        q = owner[which]
        j = self.members[pos]
        key = keys[which]
        keep = (q != j) & _touch(self.aabb[q], self.aabb[j])
        # Report the pair only in the cell of the lower-left corner of the overlap.
        gx = torch.maximum(self.lo[q, 0], self.lo[j, 0])
        gy = torch.maximum(self.lo[q, 1], self.lo[j, 1])
        keep &= gy * self.columns + gx == key
        return q[keep], j[keep]
