"""Test doubles and raster builders shared by the engine tests, plus checks of the doubles.

``BrightObjectDetector`` has the detector interface (``predict``, ``classes``, thresholds,
``info``) and finds bright blobs exactly, so merge and tiling logic can be tested without
a network. It scores objects touching the tile border *higher* than whole ones: a merge
that relied on NMS alone would then keep the cut halves, which the seam tests catch.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, from_origin

from qgis_unravel.detector.config import Normalization, Thresholds

CUT_SCORE = 0.9
WHOLE_SCORE = 0.6


class BrightObjectDetector:
    """Finds connected bright regions; class = the dominant colour channel (R, G, B)."""

    def __init__(self, tile_size: int = 256, overlap: int = 64, threshold: int = 180):
        self.classes = ["red", "green", "blue"]
        self.device = "cpu"
        self.info = {"tile_size": tile_size, "overlap": overlap, "backbone": "bright-blobs"}
        self.threshold = threshold
        self.calls: List[int] = []  # batch sizes seen
        self.shapes: List[tuple] = []
        self.thresholds: List[Thresholds] = []  # what each call was given
        self.normalizations: List[Normalization] = []

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 4, *,
                thresholds: Optional[Thresholds] = None, normalization: Optional[Normalization] = None,
                ) -> List[dict]:
        thresholds = thresholds or Thresholds()
        self.calls.append(len(images))
        self.thresholds.append(thresholds)
        self.normalizations.append(normalization or Normalization())
        return [self._one(np.asarray(img), thresholds) for img in images]

    def _one(self, img: np.ndarray, th: Thresholds) -> dict:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        self.shapes.append(img.shape)
        boxes, scores, classes = [], [], []
        for ys, xs in components(img.max(axis=2) > self.threshold):
            if len(xs) < 4:
                continue
            boxes.append(oriented_box(xs + 0.5, ys + 0.5))
            touches = min(xs.min(), ys.min()) == 0 or xs.max() == img.shape[1] - 1 \
                or ys.max() == img.shape[0] - 1
            scores.append(CUT_SCORE if touches else WHOLE_SCORE)
            classes.append(int(np.argmax(img[ys, xs].mean(axis=0))))
        keep = [i for i, s in enumerate(scores) if s >= th.score][: th.max_detections]
        return {
            "boxes": np.array([boxes[i] for i in keep], np.float32).reshape(-1, 5),
            "scores": np.array([scores[i] for i in keep], np.float32),
            "labels": np.array([classes[i] for i in keep], np.int64),
        }


def components(mask: np.ndarray) -> List[tuple]:
    """Pixel coordinates (ys, xs) of each 4-connected region of ``mask`` (plain flood fill)."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(int(y0), int(x0))], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        ys, xs = np.array(pixels).T
        found.append((ys, xs))
    return found


def oriented_box(x: np.ndarray, y: np.ndarray) -> List[float]:
    """le90 box (cx, cy, w, h, a) around pixel centres, from their principal axes."""
    pts = np.stack([x, y], axis=1).astype(np.float64)
    centre = pts.mean(axis=0)
    cov = np.cov((pts - centre).T)
    _, vecs = np.linalg.eigh(cov)
    major = vecs[:, 1]
    angle = float(np.arctan2(major[1], major[0]))
    angle = (angle + np.pi / 2) % np.pi - np.pi / 2
    if abs(angle) < 1e-6:
        angle = 0.0
    axes = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    local = (pts - centre) @ axes.T
    lo, hi = local.min(axis=0) - 0.5, local.max(axis=0) + 0.5
    mid = axes.T @ ((lo + hi) / 2) + centre
    w, h = hi - lo
    if h > w:
        w, h = h, w
        angle = angle + np.pi / 2
        angle = (angle + np.pi / 2) % np.pi - np.pi / 2
    return [float(mid[0]), float(mid[1]), float(w), float(h), angle]


def draw_rect(img: np.ndarray, cx: float, cy: float, w: float, h: float, angle: float,
              colour: Sequence[int]) -> None:
    """Fill a rotated rectangle (pixel centres inside it) with ``colour``."""
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    img[(np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)] = colour


def scene(height: int, width: int, rects: Sequence[tuple], background: int = 40) -> np.ndarray:
    """(H, W, 3) uint8 dark image with the given ``(cx, cy, w, h, a, colour)`` rectangles."""
    img = np.full((height, width, 3), background, np.uint8)
    for cx, cy, w, h, a, colour in rects:
        draw_rect(img, cx, cy, w, h, a, colour)
    return img


def write_raster(path: Path, data: np.ndarray, transform: Optional[Affine] = None,
                 crs: Optional[str] = "EPSG:32633", nodata: Optional[float] = None,
                 colour_interp: bool = True, **profile: object) -> Path:
    """Write (H, W, bands) or (H, W) pixels as a GeoTIFF; RGB interpretation for 3 bands."""
    if data.ndim == 2:
        data = data[:, :, None]
    height, width, count = data.shape
    if transform is None and crs is not None:
        transform = from_origin(500000.0, 5000000.0, 0.5, 0.5)
    options = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                   crs=crs, transform=transform, nodata=nodata)
    if count == 3 and colour_interp:
        options["photometric"] = "RGB"
    options.update(profile)
    with rasterio.open(path, "w", **options) as ds:
        ds.write(np.moveaxis(data, -1, 0))
    return path


# ---- checks of the doubles themselves ---------------------------------------------------------

def test_double_finds_a_rotated_rectangle_exactly_enough():
    img = scene(128, 128, [(60.0, 50.0, 40.0, 14.0, 0.4, (250, 30, 30))])
    out = BrightObjectDetector().predict([img])[0]
    assert out["boxes"].shape == (1, 5)
    cx, cy, w, h, a = out["boxes"][0]
    assert abs(cx - 60) < 1 and abs(cy - 50) < 1
    assert abs(w - 40) < 2 and abs(h - 14) < 2
    assert abs(a - 0.4) < 0.05
    assert out["labels"][0] == 0 and out["scores"][0] == pytest.approx(WHOLE_SCORE)


def test_double_scores_objects_cut_by_the_image_border_higher():
    img = scene(64, 64, [(60.0, 30.0, 20.0, 10.0, 0.0, (30, 250, 30))])
    out = BrightObjectDetector().predict([img])[0]
    assert out["scores"][0] == pytest.approx(CUT_SCORE) and out["labels"][0] == 1
