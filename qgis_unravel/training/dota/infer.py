"""Detecting on DOTA images the way the published numbers were made: each image is cut into the
split's patches, each patch (resized to the training scale) goes through the detector, and the
patch detections are merged back onto the image (``merge.py``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np

from ...detector.config import Thresholds
from .dataset import is_split_folder, split_patches
from .images import read_rgb, resize_image
from .merge import Detections, merge_image, shift
from .split import SplitConfig, iter_patches, list_images, parse_patch_name

PathLike = Union[str, Path]


def detect_folder(
    detector,
    root: PathLike,
    split: SplitConfig,
    img_scale: Optional[int] = None,
    batch_size: int = 2,
    progress: Optional[Callable[[int, int], None]] = None,
    thresholds: Optional[Thresholds] = None,
) -> Dict[str, Detections]:
    """{image id: merged detections} for every image of a DOTA folder (original images or a
    split folder, whose patch names give the offsets); ``thresholds`` default to the model's."""
    if is_split_folder(root):
        records = []
        for patch in split_patches(root):
            image_id, _, x, y = parse_patch_name(patch.image_id)
            records.append((image_id, patch.image, patch.window, x, y))
    else:
        records = [
            (p.image_id, p.image, p.window, p.window[0], p.window[1])
            for p in iter_patches(list_images(root), split)
        ]
    img_scale = img_scale or split.size
    parts: Dict[str, List[Detections]] = defaultdict(list)
    for start in range(0, len(records), max(1, batch_size)):
        chunk = records[start : start + batch_size]
        images, scales = [], []
        for _, path, window, _, _ in chunk:
            image = read_rgb(path, window)
            scale = img_scale / max(image.shape[:2])
            images.append(image if abs(scale - 1) < 1e-9 else resize_image(image, scale))
            scales.append(scale)
        outs = detector.predict(images, batch_size, thresholds=thresholds)
        for (image_id, _, _, x, y), scale, out in zip(chunk, scales, outs):
            found = Detections(out["boxes"], out["scores"], out["labels"])
            parts[image_id].append(shift(found, x, y, scale))
        if progress is not None:
            progress(min(start + batch_size, len(records)), len(records))
    return {image_id: merge_image(p) for image_id, p in parts.items()}


def truth_of(root: PathLike, labels: Optional[PathLike] = None) -> Dict:
    """{image id: objects} of the original (unsplit) labelled images of a DOTA folder."""
    from .split import read_objects

    return {item.id: read_objects(item) for item in list_images(root, labels) if item.labels is not None}


def count_by_class(merged: Dict[str, Detections], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for dets in merged.values():
        counts += np.bincount(np.asarray(dets.labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return counts
