"""Training samples from labelled rasters: chips read on demand, augmented, as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .augment import augment
from .chips import Chip, make_chips
from .labels import LabelError, read_labels

PathLike = Union[str, Path]


@dataclass
class Source:
    """One raster and the label layer that goes with it."""

    raster: Path
    labels: Path
    layer: Optional[str] = None


def read_window(path: PathLike, x0: int, y0: int, size: int) -> np.ndarray:
    """An (size, size, 3) uint8 RGB window, zero-filled beyond the raster's edge."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        if src.count < 3 and src.count != 1:
            raise LabelError(f"{path} has {src.count} bands; training needs RGB (3 bands) or grey (1 band)")
        if src.dtypes[0] != "uint8":
            raise LabelError(
                f"{path} is {src.dtypes[0]}; training reads 8-bit RGB rasters (convert to Byte first)"
            )
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        data = src.read(bands, window=Window(x0, y0, size, size), boundless=True, fill_value=0)
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))


class ChipDataset(torch.utils.data.Dataset):
    """All chips with objects of the given sources; labels indexed by ``classes``."""

    def __init__(
        self,
        sources: Sequence[Source],
        classes: Sequence[str],
        size: int,
        overlap: int,
        class_field: str = "class",
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        import rasterio

        self.sources = list(sources)
        self.classes = list(classes)
        self.size = size
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.chips: List[Chip] = []
        self.unknown: dict = {}
        for index, src in enumerate(self.sources):
            with rasterio.open(src.raster) as r:
                transform, crs, height, width = (
                    r.transform,
                    (r.crs.to_wkt() if r.crs else None),
                    r.height,
                    r.width,
                )
            labels = read_labels(src.labels, transform, crs, class_field, src.layer)
            ids = labels.encode(self.classes)
            for name, i in zip(labels.names, ids):
                if i < 0:
                    self.unknown[name] = self.unknown.get(name, 0) + 1
            known = ids >= 0
            self.chips += make_chips(index, labels.boxes[known], ids[known], height, width, size, overlap)

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        chip = self.chips[i]
        image = read_window(self.sources[chip.source].raster, chip.x0, chip.y0, chip.size)
        boxes = chip.boxes
        if self.augment:
            image, boxes = augment(image, boxes, self.rng)
        return image, boxes, chip.labels.copy()

    def num_objects(self) -> int:
        return int(sum(len(c.labels) for c in self.chips))

    def oversample_rare_classes(self, threshold: float) -> None:
        """List the chips of rare classes several times (repeat-factor rule, see balance.py)."""
        from .balance import balanced_chips

        self.chips = balanced_chips(self.chips, len(self.classes), threshold)


def collate(samples) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
    """Normalised (B, 3, S, S) batch plus per-image box (N, 5) and label (N,) tensors."""
    from ..detector.preprocess import make_batch

    images = [s[0] for s in samples]
    size = images[0].shape[:2]
    batch = make_batch(images, size, torch.device("cpu"))
    boxes = [torch.as_tensor(s[1], dtype=torch.float32).reshape(-1, 5) for s in samples]
    labels = [torch.as_tensor(s[2], dtype=torch.long).reshape(-1) for s in samples]
    return batch, boxes, labels


def discover_classes(sources: Sequence[Source], class_field: str = "class") -> List[str]:
    """Sorted class names found in the label layers (when the user gives none)."""
    from osgeo import ogr

    names = set()
    for src in sources:
        ds = ogr.Open(str(src.labels))
        if ds is None:
            raise LabelError(f"cannot open the label file {src.labels}")
        lyr = ds.GetLayerByName(src.layer) if src.layer else ds.GetLayer(0)
        if lyr is None:
            raise LabelError(f"{src.labels} has no layer {src.layer!r}")
        if lyr.GetLayerDefn().GetFieldIndex(class_field) < 0:
            raise LabelError(f"{src.labels} has no field {class_field!r}; choose it with --class-field")
        for feat in lyr:
            value = feat.GetField(class_field)
            if value is not None and str(value).strip():
                names.add(str(value).strip())
        ds = None
    if not names:
        raise LabelError("the label layers hold no labelled polygons")
    return sorted(names)
