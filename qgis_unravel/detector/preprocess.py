"""Turning RGB uint8 images into the network's normalised, padded input batch.

mmdet's test pipeline normalises first and pads afterwards, so the padding is 0 in the
normalised space (not black pixels); doing it the other way round changes the features
near the bottom and right edges.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .config import SIZE_DIVISOR, Normalization


def check_image(image: object, index: int = 0) -> np.ndarray:
    """Return the image as an (H, W, 3) uint8 array or raise a ValueError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image {index}: expected an RGB array of shape (H, W, 3), got shape {image.shape}; "
            "pick three bands (e.g. red, green, blue) before detecting"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: expected dtype uint8, got {image.dtype}; rescale the values to 0..255 first"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return image


def padded_size(height: int, width: int, square: bool, min_size: int = SIZE_DIVISOR) -> Tuple[int, int]:
    """Smallest multiple of 32, at least ``min_size``, holding the image (one side when square)."""
    pad_h = -(-max(height, min_size) // SIZE_DIVISOR) * SIZE_DIVISOR
    pad_w = -(-max(width, min_size) // SIZE_DIVISOR) * SIZE_DIVISOR
    if square:
        side = max(pad_h, pad_w)
        return side, side
    return pad_h, pad_w


def normalise(image: np.ndarray, device: torch.device,
              norm: Optional[Normalization] = None) -> Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in the network's channel order, normalised.

    ``norm`` defaults to the ImageNet statistics in RGB order (mmdet's ``to_rgb=True``).
    """
    norm = norm or Normalization()
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    x = x.permute(2, 0, 1).float()
    if norm.channel_order == "BGR":
        x = x.flip(0)
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=device)[:, None, None]
    std = torch.tensor(norm.std, dtype=torch.float32, device=device)[:, None, None]
    return (x - mean) / std


def make_batch(images: Sequence[np.ndarray], size: Tuple[int, int], device: torch.device,
               norm: Optional[Normalization] = None) -> Tensor:
    """Normalise each image and pad it bottom/right with 0 into a (B, 3, H, W) batch."""
    batch = torch.zeros((len(images), 3, size[0], size[1]), dtype=torch.float32, device=device)
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        batch[i, :, :h, :w] = normalise(image, device, norm)
    return batch
