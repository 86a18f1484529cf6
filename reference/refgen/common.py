"""Shared pieces of the golden-data generators: paths, the synthetic scene, file writing.

Runs inside the reference environment only (mmcv-full 1.7.2, mmdet 2.28.2, mmrotate 0.3.4).
"""

from __future__ import annotations

import json
import lzma
import math
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch

DOTA_CLASSES = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle",
    "ship", "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout",
    "harbor", "swimming-pool", "helicopter",
)
# mmdet Normalize(to_rgb=True) of the configs, in RGB order.
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def config_dir() -> Path:
    """Upstream configs extracted by build_env.sh next to the venv (or REFERENCE_CONFIGS)."""
    env = os.environ.get("REFERENCE_CONFIGS")
    return Path(env) if env else Path(sys.prefix).parent / "configs"


def le90_corners(box: np.ndarray) -> np.ndarray:
    """(4, 2) corners of (cx, cy, w, h, a): centre + R(a) (+-w/2, +-h/2), mmrotate's obb2poly_le90."""
    cx, cy, w, h, a = (float(v) for v in box)
    c, s = math.cos(a), math.sin(a)
    half = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    rot = np.array([[c, -s], [s, c]])
    return half @ rot.T + np.array([cx, cy])


def synthetic_scene(seed: int, size: int = 256, count: int = 14) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB uint8 scene: smooth colour ramps, ``count`` filled rotated rectangles, noise (std 12).

    Returns (image HWC uint8, boxes (count, 5) le90 float32 with w >= h, labels (count,) int64).
    """
    import cv2

    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.empty((size, size, 3), dtype=np.float32)
    for c in range(3):
        a, b, d = rng.uniform(60, 180), rng.uniform(-50, 50), rng.uniform(-50, 50)
        image[..., c] = a + b * xx + d * yy + 15 * np.sin(2 * math.pi * (xx * rng.uniform(1, 3) + yy))
    boxes, labels = [], []
    for _ in range(count):
        w = rng.uniform(14, 56)
        h = rng.uniform(7, w)
        cx, cy = rng.uniform(w / 2, size - w / 2, size=2)
        a = rng.uniform(-math.pi / 2, math.pi / 2)
        colour = rng.uniform(0, 255, size=3)
        box = np.array([cx, cy, w, h, a], dtype=np.float32)
        cv2.fillPoly(image, [np.round(le90_corners(box)).astype(np.int32)], colour.tolist())
        boxes.append(box)
        labels.append(rng.randint(0, len(DOTA_CLASSES)))
    image += rng.normal(0, 12, size=image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, np.stack(boxes).astype(np.float32), np.array(labels, dtype=np.int64)


def normalize(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float32 network input, as mmdet's Normalize(to_rgb=True) on an RGB image."""
    return ((image.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1).copy()


def img_metas(size: int, count: int = 1) -> list:
    shape = (size, size, 3)
    meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape, scale_factor=np.ones(4, np.float32),
                flip=False, flip_direction=None, batch_input_shape=(size, size))
    return [dict(meta) for _ in range(count)]


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value)


# Arrays that tests only compare against (never feed to the project's code) may be stored as a
# sample of their elements, which keeps the golden folder small (docs/golden.md, "Samples").
SAMPLE_SIZE = 4096  # random positions per sampled array
SAMPLE_PEAKS = 16  # plus the largest |values|, so tolerances scaled by max |ref| see them


def sample_positions(key: str, arr: np.ndarray) -> np.ndarray:
    """Sorted flat positions of ``arr`` to keep: its ``SAMPLE_PEAKS`` largest |values| and
    ``SAMPLE_SIZE`` drawn uniformly (numpy's legacy RandomState, whose stream never changes,
    seeded with the key's CRC32, so one key's sample does not move when another changes)."""
    flat = np.abs(arr.reshape(-1).astype(np.float64))
    peaks = np.argsort(-flat, kind="stable")[:SAMPLE_PEAKS]
    rng = np.random.RandomState(zlib.crc32(key.encode("utf-8")))
    drawn = rng.choice(flat.size, SAMPLE_SIZE, replace=False)
    return np.unique(np.concatenate([peaks, drawn]))


def sampled(key: str, arr: np.ndarray) -> Dict[str, np.ndarray]:
    """``key@shape``, ``key@index`` (flat positions, int64) and ``key@value`` for one array."""
    positions = sample_positions(key, arr)
    return {f"{key}@shape": np.array(arr.shape, dtype=np.int64), f"{key}@index": positions.astype(np.int64),
            f"{key}@value": arr.reshape(-1)[positions]}


def save_npz(path: Path, arrays: Dict[str, Any], whole: Callable[[str], bool] = lambda key: True) -> None:
    """Compressed .npz; floats stay float32, indices int64.

    Arrays for which ``whole(key)`` is false and that have more than twice ``SAMPLE_SIZE``
    elements are stored as a sample (:func:`sampled`). numpy writes every zip member with the
    fixed date 1980-01-01 and the members are written in the order given, so equal arrays give
    byte-identical files.
    """
    out = {}
    for key, value in arrays.items():
        arr = to_numpy(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if not whole(key) and arr.size > 2 * SAMPLE_SIZE:
            out.update(sampled(key, arr))
        else:
            out[key] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)


def save_json(path: Path, data: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return to_numpy(value).tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def save_checkpoint_xz(path: Path, state_dict: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> None:
    """An mmcv-format checkpoint ({'meta', 'state_dict'}), xz-compressed to ``path`` (…​.pth.xz).

    The weights are drawn on a coarse grid (see models.py), so xz shrinks them several times.
    """
    import io

    buffer = io.BytesIO()
    torch.save({"meta": meta, "state_dict": state_dict}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(buffer.getvalue(), preset=6))


def write_key_list(path: Path, state_dict: Dict[str, torch.Tensor]) -> None:
    """One ``key<TAB>[shape]<TAB>dtype`` line per state_dict entry, in order."""
    lines = [f"{k}\t{list(v.shape)}\t{str(v.dtype).replace('torch.', '')}" for k, v in state_dict.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
