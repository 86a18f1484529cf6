"""Rotated-box IoU with mmcv 1.7's ``box_iou_rotated`` semantics, vectorised in plain PyTorch.

The intersection of two rectangles is a convex polygon whose vertices are among the 16 edge-edge
crossings and the 8 corners of one box lying inside the other. For every pair at once we collect
those 24 candidate points with a validity mask, order the valid ones by angle around their mean
and take the shoelace area: no Python loop over pairs. Work is done in chunks of pairs so memory
stays bounded, and pairs whose circumscribed circles do not meet are skipped (their IoU is 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_iou_rotated", "rotated_pair_intersection", "rotated_pair_iou"]

# Pairs per chunk of the exact polygon computation (about 5 KiB of temporaries per pair);
# small chunks stay in cache.
PAIR_CHUNK = 1 << 13
# mmcv returns IoU 0 when either box has an area below this.
_MIN_AREA = 1e-14


def _working_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _corners(ctr: Tensor, wh: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Corners (P, 4, 2) in box-frame order (-,-), (+,-), (+,+), (-,+), a convex cycle."""
    hx = wh[:, 0:1] * 0.5 * torch.tensor([-1.0, 1.0, 1.0, -1.0], dtype=wh.dtype, device=wh.device)
    hy = wh[:, 1:2] * 0.5 * torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=wh.dtype, device=wh.device)
    x = ctr[:, 0:1] + cos[:, None] * hx - sin[:, None] * hy
    y = ctr[:, 1:2] + sin[:, None] * hx + cos[:, None] * hy
    return torch.stack([x, y], dim=-1)


def _inside(points: Tensor, ctr: Tensor, wh: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Whether each of ``points`` (P, 4, 2) lies in its pair's box, with a rounding tolerance.

    The tolerance keeps the corners of two identical boxes inside each other; a point accepted
    a hair outside the box changes the area by at most that hair times an edge length.
    """
    d = points - ctr[:, None, :]
    u = d[..., 0] * cos[:, None] + d[..., 1] * sin[:, None]
    v = -d[..., 0] * sin[:, None] + d[..., 1] * cos[:, None]
    scale = (wh.sum(-1) + ctr.abs().sum(-1))[:, None]
    tol = scale * (64 * torch.finfo(points.dtype).eps)
    return (u.abs() <= wh[:, 0:1] * 0.5 + tol) & (v.abs() <= wh[:, 1:2] * 0.5 + tol)


def _edge_crossings(p: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Crossing points (P, 16, 2) of every edge of polygon p with every edge of q, and validity."""
    dp = p.roll(-1, dims=1) - p  # (P, 4, 2) edge vectors
    dq = q.roll(-1, dims=1) - q
    a = p[:, :, None, :]
    da = dp[:, :, None, :]
    b = q[:, None, :, :]
    db = dq[:, None, :, :]
    ab = b - a
    det = db[..., 0] * da[..., 1] - db[..., 1] * da[..., 0]  # cross(db, da)
    # Relative test: for collinear edges (boxes sharing an edge line) det and both numerators are
    # rounding noise, and their ratio would invent crossings. Such edges meet only at corners,
    # which the containment tests supply.
    lengths = da.norm(dim=-1) * db.norm(dim=-1)
    parallel = det.abs() <= torch.clamp(lengths * (64 * torch.finfo(det.dtype).eps), min=1e-14)
    safe = torch.where(parallel, torch.ones_like(det), det)
    t1 = (db[..., 0] * ab[..., 1] - db[..., 1] * ab[..., 0]) / safe
    t2 = (da[..., 0] * ab[..., 1] - da[..., 1] * ab[..., 0]) / safe
    valid = (~parallel) & (t1 >= 0) & (t1 <= 1) & (t2 >= 0) & (t2 <= 1)
    pts = a + da * t1[..., None]
    return pts.reshape(p.shape[0], 16, 2), valid.reshape(p.shape[0], 16)


def _pseudo_angle(v: Tensor) -> Tensor:
    """A cheap stand-in for atan2 that orders directions the same way (values in [-1, 3))."""
    x, y = v[..., 0], v[..., 1]
    r = x.abs() + y.abs()
    t = y / torch.where(r > 0, r, torch.ones_like(r))
    return torch.where(x >= 0, t, 2 - t)


def _convex_area(points: Tensor, valid: Tensor) -> Tensor:
    """Area of the convex hull of the valid points, all of which lie on that hull (or repeat)."""
    count = valid.sum(-1, keepdim=True)
    w = valid.to(points.dtype)[..., None]
    mean = (points * w).sum(1, keepdim=True) / count.clamp(min=1)[..., None].to(points.dtype)
    rel = points - mean
    angle = _pseudo_angle(rel)
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))
    order = angle.argsort(dim=-1)
    rel = rel.gather(1, order[..., None].expand_as(rel))
    ordered_valid = valid.gather(1, order)
    # Invalid points (sorted last) repeat the first point: they add zero-length edges only.
    rel = torch.where(ordered_valid[..., None], rel, rel[:, :1, :])
    nxt = rel.roll(-1, dims=1)
    cross = rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]
    area = cross.sum(-1).abs() * 0.5
    return torch.where(count.squeeze(-1) > 2, area, torch.zeros_like(area))


def _intersection_chunk(b1: Tensor, b2: Tensor) -> Tensor:
    # Work relative to the midpoint of the two centres, as mmcv does, for precision.
    shift = (b1[:, :2] + b2[:, :2]) * 0.5
    c1, c2 = b1[:, :2] - shift, b2[:, :2] - shift
    cos1, sin1 = torch.cos(b1[:, 4]), torch.sin(b1[:, 4])
    cos2, sin2 = torch.cos(b2[:, 4]), torch.sin(b2[:, 4])
    p = _corners(c1, b1[:, 2:4], cos1, sin1)
    q = _corners(c2, b2[:, 2:4], cos2, sin2)
    cross_pts, cross_ok = _edge_crossings(p, q)
    p_in_q = _inside(p, c2, b2[:, 2:4], cos2, sin2)
    q_in_p = _inside(q, c1, b1[:, 2:4], cos1, sin1)
    points = torch.cat([cross_pts, p, q], dim=1)
    valid = torch.cat([cross_ok, p_in_q, q_in_p], dim=1)
    return _convex_area(points, valid)


def rotated_pair_intersection(b1: Tensor, b2: Tensor, chunk: int = PAIR_CHUNK) -> Tensor:
    """Intersection area of aligned pairs of rotated boxes ``b1[i]``, ``b2[i]`` (both (P, 5))."""
    dtype = _working_dtype(b1)
    b1, b2 = b1.to(dtype), b2.to(dtype)
    out = b1.new_zeros(b1.shape[0])
    for start in range(0, b1.shape[0], chunk):
        stop = start + chunk
        out[start:stop] = _intersection_chunk(b1[start:stop], b2[start:stop])
    return out


def rotated_pair_iou(b1: Tensor, b2: Tensor, mode: str = "iou") -> Tensor:
    """IoU (or IoF: intersection over the area of ``b1``) of aligned pairs, mmcv's formula."""
    dtype = _working_dtype(b1)
    b1, b2 = b1.to(dtype), b2.to(dtype)
    area1 = b1[:, 2] * b1[:, 3]
    area2 = b2[:, 2] * b2[:, 3]
    ok = (area1 >= _MIN_AREA) & (area2 >= _MIN_AREA)
    inter = rotated_pair_intersection(b1, b2)
    base = area1 + area2 - inter if mode == "iou" else area1
    base = torch.where(ok, base, torch.ones_like(base))
    return torch.where(ok, inter / base, torch.zeros_like(inter))


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"{name} must have shape (N, 5) as (cx, cy, w, h, a), got {tuple(boxes.shape)}")


def _circles_meet(b1: Tensor, b2: Tensor) -> Tensor:
    """Dense (N, M) mask of pairs whose circumscribed circles touch (a cheap superset of overlap)."""
    r1 = 0.5 * torch.hypot(b1[:, 2], b1[:, 3])
    r2 = 0.5 * torch.hypot(b2[:, 2], b2[:, 3])
    dist = torch.cdist(b1[:, :2].contiguous(), b2[:, :2].contiguous())
    return dist <= (r1[:, None] + r2[None, :]) * (1 + 1e-5) + 1e-5


def box_iou_rotated(
    boxes1: Tensor, boxes2: Tensor, mode: str = "iou", aligned: bool = False
) -> Tensor:
    """IoU of rotated boxes ``(cx, cy, w, h, a)``, as mmcv 1.7's ``box_iou_rotated(clockwise=True)``.

    Args:
        boxes1: ``(N, 5)`` boxes, angle in radians (le90 or any other range: only geometry counts).
        boxes2: ``(M, 5)`` boxes (``M == N`` when ``aligned``).
        mode: ``"iou"`` for intersection over union, ``"iof"`` for intersection over the area of
            the ``boxes1`` box.
        aligned: if True, compare ``boxes1[i]`` with ``boxes2[i]`` only.

    Returns:
        ``(N, M)`` (or ``(N,)`` when aligned) in the dtype of ``boxes1``. A pair where either box has
        area below 1e-14 gets 0. Computed in float32 (float64 for float64 input), relative to the
        pair's mid-centre like mmcv, so values agree with mmcv to about 1e-6.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    out_dtype = boxes1.dtype if boxes1.is_floating_point() else torch.float32
    b1 = boxes1.to(_working_dtype(boxes1))
    b2 = boxes2.to(device=b1.device, dtype=b1.dtype)
    if aligned:
        if b1.shape[0] != b2.shape[0]:
            raise ValueError(
                f"aligned IoU needs as many boxes in boxes1 as in boxes2, got {b1.shape[0]} and {b2.shape[0]}"
            )
        return rotated_pair_iou(b1, b2, mode).to(out_dtype)
    n, m = b1.shape[0], b2.shape[0]
    ious = b1.new_zeros((n, m))
    if n == 0 or m == 0:
        return ious.to(out_dtype)
    rows_per_block = max(1, (1 << 22) // max(m, 1))
    for start in range(0, n, rows_per_block):
        block = b1[start : start + rows_per_block]
        ii, jj = torch.nonzero(_circles_meet(block, b2), as_tuple=True)
        if ii.numel():
            ious[start + ii, jj] = rotated_pair_iou(block[ii], b2[jj], mode)
    return ious.to(out_dtype)
