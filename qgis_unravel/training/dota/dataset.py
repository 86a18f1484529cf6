"""Training samples from a DOTA folder: an already split one (``images/`` + ``annfiles/``, as
``qgis-unravel dota split`` or mmrotate's ``img_split.py`` write it) or the original large images
(``images/`` + ``labelTxt/``), cut into patches on the fly with the same rules.

Like mmrotate's ``DOTADataset``: polygons become their minimum-area rectangles (le90); boxes with
a side under 2 px are dropped; patches without objects are skipped. Patches whose window is not
the training size (the multi-scale split) are resized to it, as the configs' ``RResize`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..geometry import min_area_rect
from ..labels import MIN_SIDE
from .images import image_size, read_rgb, resize_image
from .labeltxt import DIFFICULT, DotaFormatError, DotaObjects, read_labeltxt
from .split import Patch, SplitConfig, iter_patches, list_images, parse_patch_name

PathLike = Union[str, Path]
Augment = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.random.Generator], Tuple[np.ndarray, np.ndarray, np.ndarray]
]

DIFFICULT_MODES = ("keep", "ignore")


def is_split_folder(root: PathLike) -> bool:
    """True for a folder of patches (``annfiles/``), False for original images (``labelTxt``)."""
    return (Path(root) / "annfiles").is_dir()


def split_patches(root: PathLike) -> List[Patch]:
    """The patches of a split folder, each whole (window = the patch image)."""
    root = Path(root)
    patches = []
    for item in list_images(root, root / "annfiles"):
        try:
            _, size, _, _ = parse_patch_name(item.id)
            width = height = size
        except DotaFormatError:
            width, height = image_size(item.image)
        objects = read_labeltxt(item.labels) if item.labels is not None else DotaObjects()
        patches.append(Patch(item.image, item.id, (0, 0, width, height), objects))
    return patches


def targets(
    objects: DotaObjects, classes: Sequence[str], difficult: str = "keep"
) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """le90 boxes (N, 5), labels (N,) and the counts of names outside ``classes``.

    ``difficult="ignore"`` leaves out the objects the annotators flagged difficult (1); the
    split's truncated objects (2) are always kept, as mmrotate trains on them."""
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {', '.join(DIFFICULT_MODES)}, got {difficult!r}")
    index = {c: i for i, c in enumerate(classes)}
    boxes, labels, unknown = [], [], {}
    for poly, name, diff in zip(objects.polys, objects.names, objects.difficulty):
        if name not in index:
            unknown[name] = unknown.get(name, 0) + 1
            continue
        if difficult == "ignore" and diff == DIFFICULT:
            continue
        try:
            box = min_area_rect(poly.reshape(4, 2))
        except ValueError:
            continue
        if box[2] < MIN_SIDE or box[3] < MIN_SIDE:
            continue
        boxes.append(box)
        labels.append(index[name])
    return np.array(boxes, dtype=np.float64).reshape(-1, 5), np.array(labels, dtype=np.int64), unknown


class DotaDataset(torch.utils.data.Dataset):
    """Patches with objects of a DOTA folder, as (image, boxes, labels) at ``img_scale`` pixels."""

    def __init__(
        self,
        root: PathLike,
        classes: Sequence[str],
        split: Optional[SplitConfig] = None,
        difficult: str = "keep",
        img_scale: Optional[int] = None,
        augment: Optional[Augment] = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.classes = list(classes)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        if is_split_folder(self.root):
            patches = split_patches(self.root)
        else:
            split = split or SplitConfig()
            patches = list(iter_patches(list_images(self.root), split))
        self.img_scale = img_scale or (split.size if split is not None else None)
        self.patches: List[Patch] = []
        self.boxes: List[np.ndarray] = []
        self.labels: List[np.ndarray] = []
        self.unknown: Dict[str, int] = {}
        for patch in patches:
            boxes, labels, unknown = targets(patch.objects, self.classes, difficult)
            for name, n in unknown.items():
                self.unknown[name] = self.unknown.get(name, 0) + n
            if len(labels):
                self.patches.append(patch)
                self.boxes.append(boxes)
                self.labels.append(labels)
        self.num_patches = len(patches)

    def __len__(self) -> int:
        return len(self.patches)

    def num_objects(self) -> int:
        return int(sum(len(lab) for lab in self.labels))

    def __getitem__(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        patch = self.patches[i]
        image = read_rgb(patch.image, patch.window)
        boxes, labels = self.boxes[i].copy(), self.labels[i].copy()
        if self.img_scale and image.shape[0] != self.img_scale:
            scale = self.img_scale / max(image.shape[:2])
            image = resize_image(image, scale)
            boxes[:, :4] *= scale
        if self.augment is not None:
            image, boxes, labels = self.augment(image, boxes, labels, self.rng)
        return image, boxes, labels
