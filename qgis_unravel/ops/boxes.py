"""Rotated-box conversions in the le90 convention, matching mmrotate 0.3.4's torch functions.

A rotated box is ``(cx, cy, w, h, a)`` in pixels, ``a`` in radians, x right and y down. Its corners
are ``c + R(a) @ (±w/2, ±h/2)`` with ``R = [[cos, -sin], [sin, cos]]``, so on screen a positive
angle turns the box clockwise (mmcv's ``clockwise=True``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "norm_angle",
    "obb2poly",
    "obb2xyxy",
    "obb_half_extents",
    "poly2obb",
]


def _check_last_dim(t: Tensor, size: int, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2 or t.shape[-1] != size:
        raise ValueError(f"{name} must have shape (N, {size}), got {tuple(t.shape)}")


def norm_angle(angle: Tensor) -> Tensor:
    """Wrap angles into le90's ``[-pi/2, pi/2)``.

    Same arithmetic as mmrotate's ``norm_angle(angle, 'le90')`` (``(a + pi/2) % pi - pi/2``), so
    values land on the same side of the boundary as the reference.
    """
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def obb2poly(boxes: Tensor) -> Tensor:
    """Corners ``[x0, y0, x1, y1, x2, y2, x3, y3]`` of rotated boxes ``(N, 5)`` -> ``(N, 8)``.

    The corner order is mmrotate's ``obb2poly_le90``: the box-frame corners ``(-w/2, -h/2)``,
    ``(w/2, -h/2)``, ``(w/2, h/2)``, ``(-w/2, h/2)`` rotated by ``a`` and moved to the centre.
    ``poly2obb`` relies on this order.
    """
    _check_last_dim(boxes, 5, "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    hw, hh = w * 0.5, h * 0.5
    local_x = torch.stack([-hw, hw, hw, -hw], dim=-1)
    local_y = torch.stack([-hh, -hh, hh, hh], dim=-1)
    xs = cos[:, None] * local_x - sin[:, None] * local_y + cx[:, None]
    ys = sin[:, None] * local_x + cos[:, None] * local_y + cy[:, None]
    return torch.stack([xs, ys], dim=-1).reshape(boxes.shape[0], 8)


def obb_half_extents(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Half width and half height of each rotated box's axis-aligned bounding box."""
    w, h, a = boxes[:, 2], boxes[:, 3], boxes[:, 4]
    cos, sin = torch.cos(a), torch.sin(a)
    half_x = torch.abs(w / 2 * cos) + torch.abs(h / 2 * sin)
    half_y = torch.abs(w / 2 * sin) + torch.abs(h / 2 * cos)
    return half_x, half_y


def obb2xyxy(boxes: Tensor) -> Tensor:
    """Axis-aligned bounding boxes ``(x1, y1, x2, y2)`` enclosing rotated boxes ``(N, 5)``.

    Same formula as mmrotate's ``obb2xyxy_le90``; the RPN's horizontal NMS runs on these.
    """
    _check_last_dim(boxes, 5, "boxes")
    half_x, half_y = obb_half_extents(boxes)
    cx, cy = boxes[:, 0], boxes[:, 1]
    return torch.stack([cx - half_x, cy - half_y, cx + half_x, cy + half_y], dim=-1)


def poly2obb(polys: Tensor) -> Tensor:
    """Rotated boxes ``(N, 5)`` from four-point polygons ``(N, 8)``, by point order.

    This is mmrotate's torch ``poly2obb_le90``, not a minimum-area rectangle: the centre is the
    midpoint of points 0 and 2, ``w``/``h`` are the longer/shorter of edges 0-1 and 1-2, and the
    angle is that of edge 0-1 when it is the longer one (else of edge 0-3), wrapped into le90.
    """
    _check_last_dim(polys, 8, "polys")
    p = polys.reshape(-1, 4, 2)
    p0, p1, p2, p3 = p.unbind(1)
    edge1 = torch.sqrt((p0[:, 0] - p1[:, 0]) ** 2 + (p0[:, 1] - p1[:, 1]) ** 2)
    edge2 = torch.sqrt((p1[:, 0] - p2[:, 0]) ** 2 + (p1[:, 1] - p2[:, 1]) ** 2)
    angle1 = torch.atan2(p1[:, 1] - p0[:, 1], p1[:, 0] - p0[:, 0])
    angle2 = torch.atan2(p3[:, 1] - p0[:, 1], p3[:, 0] - p0[:, 0])
    angle = norm_angle(torch.where(edge1 > edge2, angle1, angle2))
    cx = (p0[:, 0] + p2[:, 0]) / 2.0
    cy = (p0[:, 1] + p2[:, 1]) / 2.0
    w = torch.maximum(edge1, edge2)
    h = torch.minimum(edge1, edge2)
    return torch.stack([cx, cy, w, h, angle], dim=-1)
