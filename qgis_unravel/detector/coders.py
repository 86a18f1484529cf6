"""Box coders of Oriented R-CNN: the RPN's midpoint-offset coder and the R-CNN's delta coder.

Both follow mmrotate 0.3.4 formula for formula (angle version le90), because the trained
weights regress exactly these targets; any deviation moves every box.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..ops import norm_angle, obb2poly, obb2xyxy, poly2obb
from .config import RCNN_CODER_STDS, RPN_CODER_STDS

WH_RATIO_CLIP = 16 / 1000
MAX_LOG_RATIO = abs(math.log(WH_RATIO_CLIP))


def _denormalise(deltas: Tensor, means: Sequence[float], stds: Sequence[float]) -> Tensor:
    return deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)


def _normalise(deltas: Tensor, means: Sequence[float], stds: Sequence[float]) -> Tensor:
    return (deltas - deltas.new_tensor(means)) / deltas.new_tensor(stds)


class MidpointOffsetCoder:
    """Horizontal anchor (x1, y1, x2, y2) <-> oriented box via (dx, dy, dw, dh, da, db).

    ``da``/``db`` are the offsets of the top and right midpoints of the box's polygon
    along the anchor's edges; decode rebuilds a parallelogram, stretches it into a
    rectangle along its diagonals and reads the oriented box with ``poly2obb``.
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0,) * 6,
        stds: Sequence[float] = RPN_CODER_STDS,
    ) -> None:
        self.means = tuple(means)
        self.stds = tuple(stds)

    def decode(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """(N, 4) xyxy anchors and (N, 6) deltas -> (N, 5) le90 boxes.

        mmrotate's version takes a ``max_shape`` argument and ignores it; so does this one
        by not taking it.
        """
        d = _denormalise(deltas, self.means, self.stds)
        dx, dy, dw, dh, da, db = d.unbind(dim=-1)
        dw = dw.clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
        dh = dh.clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
        px = (anchors[:, 0] + anchors[:, 2]) * 0.5
        py = (anchors[:, 1] + anchors[:, 3]) * 0.5
        pw = anchors[:, 2] - anchors[:, 0]
        ph = anchors[:, 3] - anchors[:, 1]
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        gx = px + pw * dx
        gy = py + ph * dy
        x1, y1 = gx - gw * 0.5, gy - gh * 0.5
        x2, y2 = gx + gw * 0.5, gy + gh * 0.5
        da = da.clamp(min=-0.5, max=0.5)
        db = db.clamp(min=-0.5, max=0.5)
        ga, ga_opp = gx + da * gw, gx - da * gw
        gb, gb_opp = gy + db * gh, gy - db * gh
        polys = torch.stack([ga, y1, x2, gb, ga_opp, y2, x1, gb_opp], dim=-1)
        return poly2obb(_stretch_to_rectangle(polys, gx, gy))

    def encode(self, anchors: Tensor, gt: Tensor) -> Tensor:
        """(N, 4) xyxy anchors and (N, 5) le90 targets -> (N, 6) normalised deltas."""
        anchors, gt = anchors.float(), gt.float()
        px = (anchors[:, 0] + anchors[:, 2]) * 0.5
        py = (anchors[:, 1] + anchors[:, 3]) * 0.5
        pw = anchors[:, 2] - anchors[:, 0]
        ph = anchors[:, 3] - anchors[:, 1]
        hbb, poly = obb2xyxy(gt), obb2poly(gt)
        gx = (hbb[:, 0] + hbb[:, 2]) * 0.5
        gy = (hbb[:, 1] + hbb[:, 3]) * 0.5
        gw = hbb[:, 2] - hbb[:, 0]
        gh = hbb[:, 3] - hbb[:, 1]
        ga, gb = _top_and_right_midpoints(poly)
        deltas = torch.stack(
            [
                (gx - px) / pw,
                (gy - py) / ph,
                torch.log(gw / pw),
                torch.log(gh / ph),
                (ga - gx) / gw,
                (gb - gy) / gh,
            ],
            dim=-1,
        )
        return _normalise(deltas, self.means, self.stds)


def _stretch_to_rectangle(polys: Tensor, gx: Tensor, gy: Tensor) -> Tensor:
    """Scale each corner's distance from the centre to the longest one (a rectangle)."""
    center = torch.stack([gx, gy] * 4, dim=-1)
    rel = polys - center
    diag = torch.sqrt(rel[:, 0::2] * rel[:, 0::2] + rel[:, 1::2] * rel[:, 1::2])
    max_diag = diag.max(dim=-1, keepdim=True).values
    scale = (max_diag / diag).repeat_interleave(2, dim=-1)
    return rel * scale + center


def _top_and_right_midpoints(poly: Tensor) -> Tuple[Tensor, Tensor]:
    """x of the topmost corner (largest x among ties) and y of the rightmost (largest y)."""
    xs, ys = poly[:, 0::2], poly[:, 1::2]
    y_min = ys.min(dim=1, keepdim=True).values
    x_max = xs.max(dim=1, keepdim=True).values
    ga = xs.masked_fill((ys - y_min).abs() > 0.1, -1000.0).max(dim=1).values
    gb = ys.masked_fill((xs - x_max).abs() > 0.1, -1000.0).max(dim=1).values
    return ga, gb


class DeltaXYWHAOBBoxCoder:
    """Oriented RoI <-> oriented box via (dx, dy, dw, dh, da), le90, edge swap, projected xy.

    Settings of the Oriented R-CNN configs: ``norm_factor=None``, ``edge_swap=True``,
    ``proj_xy=True`` (the centre offset is expressed in the RoI's rotated frame).
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0,) * 5,
        stds: Sequence[float] = RCNN_CODER_STDS,
    ) -> None:
        self.means = tuple(means)
        self.stds = tuple(stds)

    def decode(self, rois: Tensor, deltas: Tensor, max_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        """(N, 5) le90 RoIs and (N, 5) deltas -> (N, 5) le90 boxes with w >= h.

        ``max_shape`` (H, W) clamps the centres to [0, W-1] x [0, H-1] as mmrotate does.
        """
        d = _denormalise(deltas, self.means, self.stds)
        dx, dy, dw, dh, da = d.unbind(dim=-1)
        px, py, pw, ph, pa = rois.unbind(dim=-1)
        dw = dw.clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
        dh = dh.clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        cos, sin = torch.cos(pa), torch.sin(pa)
        gx = dx * pw * cos - dy * ph * sin + px
        gy = dx * pw * sin + dy * ph * cos + py
        ga = norm_angle(pa + da)
        if max_shape is not None:
            gx = gx.clamp(min=0, max=max_shape[1] - 1)
            gy = gy.clamp(min=0, max=max_shape[0] - 1)
        wider = gw > gh
        w_reg = torch.where(wider, gw, gh)
        h_reg = torch.where(wider, gh, gw)
        a_reg = norm_angle(torch.where(wider, ga, ga + math.pi / 2))
        return torch.stack([gx, gy, w_reg, h_reg, a_reg], dim=-1)

    def encode(self, rois: Tensor, gt: Tensor) -> Tensor:
        """(N, 5) le90 RoIs and (N, 5) le90 targets -> (N, 5) normalised deltas."""
        rois, gt = rois.float(), gt.float()
        px, py, pw, ph, pa = rois.unbind(dim=-1)
        gx, gy, gw, gh, ga = gt.unbind(dim=-1)
        cos, sin = torch.cos(pa), torch.sin(pa)
        dx = (cos * (gx - px) + sin * (gy - py)) / pw
        dy = (-sin * (gx - px) + cos * (gy - py)) / ph
        dtheta1 = norm_angle(ga - pa)
        dtheta2 = norm_angle(ga - pa + math.pi / 2)
        keep = dtheta1.abs() < dtheta2.abs()
        gw_reg = torch.where(keep, gw, gh)
        gh_reg = torch.where(keep, gh, gw)
        da = torch.where(keep, dtheta1, dtheta2)
        deltas = torch.stack([dx, dy, torch.log(gw_reg / pw), torch.log(gh_reg / ph), da], dim=-1)
        return _normalise(deltas, self.means, self.stds)
