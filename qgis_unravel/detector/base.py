"""What every native detector shares: input checks, padding and batching of images, ``predict``.

A detector subclass provides ``backbone`` (for its input constraints) and ``run_stages``
(a normalised batch -> a dict whose ``"detections"`` holds per-image (boxes, scores,
labels)); ``forward`` and ``predict`` are the same for all of them.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .config import DOTA_V1_CLASSES, SIZE_DIVISOR, Normalization, Thresholds
from .preprocess import check_image, make_batch, padded_size

Result = Dict[str, Tensor]


def default_class_names(num_classes: int) -> List[str]:
    """DOTA-v1.0 names for 15 classes, else class_0, class_1, ..."""
    if num_classes == len(DOTA_V1_CLASSES):
        return list(DOTA_V1_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


# Names a caller might set on a model that nothing reads: a write would silently create an
# attribute. Thresholds are per call (``Thresholds``); inference speed-ups are applied once, at
# load (``folding.prepare_for_inference``).
_PER_CALL = ("pass thresholds=Thresholds(...) to forward() or predict() (per call), or change the "
             "model's test config")
_REFUSED_NAMES = {
    **dict.fromkeys(("score_threshold", "score_thr", "nms_iou", "iou_threshold", "max_detections"),
                    _PER_CALL),
    "fast": "inference speed-ups are applied once by prepare_for_inference() (load_detector does it)",
}


class DetectorBase(nn.Module):
    """Base of OrientedRCNN and RefinedDet: le90 boxes in input pixels, w >= h."""

    backbone: nn.Module

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _REFUSED_NAMES:
            raise AttributeError(f"'{name}' is not a setting of the model: {_REFUSED_NAMES[name]}")
        super().__setattr__(name, value)
    classes: List[str]
    info: Dict[str, Any]

    def set_labels(
        self, num_classes: int, classes: Optional[Sequence[str]], info: Optional[Dict[str, Any]]
    ) -> None:
        """Class names (DOTA's or class_i by default) and the info dict, checked against the head."""
        self.classes = list(classes) if classes is not None else default_class_names(num_classes)
        if len(self.classes) != num_classes:
            raise ValueError(f"{len(self.classes)} class names given for a head with {num_classes} classes")
        self.info = dict(info or {})
        self.info.setdefault("num_classes", num_classes)

    @property
    def requires_square(self) -> bool:
        return bool(getattr(self.backbone, "requires_square", False))

    @property
    def min_input_size(self) -> int:
        """Smallest side the backbone accepts (UnravelNet needs 96: its blur pads the 1/32 map)."""
        size = getattr(self.backbone, "min_input_size", None)
        if size is None:
            module = sys.modules.get(type(self.backbone).__module__)
            size = getattr(module, "MIN_INPUT_SIZE", SIZE_DIVISOR)
        return int(size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, batch: Tensor, image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                thresholds: Optional[Thresholds] = None) -> List[Result]:
        """Detect in a normalised batch; ``image_sizes`` (H, W) are the unpadded sizes.

        Returns one dict per image with "boxes" (N, 5), "scores" (N,), "labels" (N,),
        sorted by descending score. ``thresholds`` apply to this call only.
        """
        stages = self.run_stages(batch, image_sizes, thresholds)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in stages["detections"]]

    def run_stages(
        self, batch: Tensor, image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        thresholds: Optional[Thresholds] = None,
    ) -> Dict[str, Any]:
        raise NotImplementedError

    def image_sizes_for(
        self, batch: Tensor, image_sizes: Optional[Sequence[Tuple[int, int]]]
    ) -> List[Tuple[int, int]]:
        """Check the batch; the given unpadded sizes, or the batch's own size for every image."""
        self.check_batch(batch)
        if image_sizes is None:
            image_sizes = [tuple(batch.shape[-2:])] * batch.shape[0]
        if len(image_sizes) != batch.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes given for a batch of {batch.shape[0]}")
        return [tuple(size) for size in image_sizes]

    def check_batch(self, batch: Tensor) -> None:
        """Raise a ValueError for a batch the network cannot take."""
        if not isinstance(batch, Tensor) or batch.dim() != 4:
            shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"expected a (B, 3, H, W) tensor, got {shape}")
        if batch.shape[1] != 3:
            raise ValueError(f"expected 3 (RGB) channels, got {batch.shape[1]}")
        height, width = batch.shape[-2:]
        if height % SIZE_DIVISOR or width % SIZE_DIVISOR:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of {SIZE_DIVISOR}; pad it "
                "(predict() does this for you)"
            )
        if self.requires_square and height != width:
            raise ValueError(
                f"the {self.info.get('backbone', 'backbone')} backbone needs square inputs, "
                f"got {height}x{width}; pad to a square (predict() does this for you)"
            )

    # images ----------------------------------------------------------------------
    # ``predict(..., on_device=True)`` is understood (the engine asks before using it).
    predicts_on_device = True

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 4, *,
                thresholds: Optional[Thresholds] = None,
                normalization: Optional[Normalization] = None,
                on_device: bool = False) -> List[Dict[str, Any]]:
        """Detect in RGB uint8 (H, W, 3) arrays of any size; numpy results in input order.

        Images are normalised (``normalization``; default ImageNet RGB), padded bottom/right
        (with 0 after normalisation, as mmdet does) to a multiple of 32 (a square one when the
        backbone needs it) and batched by padded size. ``thresholds`` (default: the config's)
        apply to this call only: the model is never changed, so one cached model serves
        concurrent runs with different settings. ``on_device=True`` returns the result tensors
        where the network ran (a GPU caller copies them back once, at the end, instead of
        waiting for the GPU after every batch).
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("predict() takes a list of images; wrap a single image in a list")
        images = [check_image(img, i) for i, img in enumerate(images)]
        results: List[Optional[Dict[str, np.ndarray]]] = [None] * len(images)
        step = max(1, int(batch_size))
        for size, indices in self._group_by_padded_size(images).items():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                batch = make_batch([images[i] for i in chunk], size, self.device, normalization)
                sizes = [tuple(images[i].shape[:2]) for i in chunk]
                for i, out in zip(chunk, self(batch, sizes, thresholds)):
                    results[i] = out if on_device else _to_numpy(out)
        return results  # type: ignore[return-value]

    def _group_by_padded_size(self, images: Sequence[np.ndarray]) -> Dict[Tuple[int, int], List[int]]:
        groups: Dict[Tuple[int, int], List[int]] = defaultdict(list)
        for i, img in enumerate(images):
            size = padded_size(img.shape[0], img.shape[1], self.requires_square, self.min_input_size)
            groups[size].append(i)
        return groups


def _to_numpy(out: Result) -> Dict[str, np.ndarray]:
    return {
        "boxes": out["boxes"].float().cpu().numpy(),
        "scores": out["scores"].float().cpu().numpy(),
        "labels": out["labels"].cpu().numpy().astype(np.int64),
    }
