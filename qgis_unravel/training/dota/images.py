"""Reading DOTA images (PNG, JPEG, TIFF, BMP: whatever GDAL reads) as RGB uint8 and writing patches.

DOTA images carry no georeferencing, so GDAL's warnings about it are silenced.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# The split configs pad with (104, 116, 124) in OpenCV's BGR order: this is the same colour in RGB.
PAD_RGB = (124, 116, 104)


@contextmanager
def open_image(path: PathLike, *args, **kwargs):
    """``rasterio.open`` without the warning about missing georeferencing."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, *args, **kwargs) as ds:
            yield ds


def image_size(path: PathLike) -> Tuple[int, int]:
    """(width, height) of an image file."""
    with open_image(path) as src:
        return src.width, src.height


def read_rgb(
    path: PathLike,
    window: Optional[Tuple[int, int, int, int]] = None,
    fill: Sequence[int] = PAD_RGB,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the whole image or of window (x0, y0, x1, y1), filled beyond the edge.

    Grey images are repeated into three bands; a fourth (alpha) band is dropped.
    """
    from rasterio.windows import Window

    with open_image(path) as src:
        if src.dtypes[0] != "uint8":
            raise ValueError(f"{path} is {src.dtypes[0]}; DOTA images are 8-bit")
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        if window is None:
            data = src.read(bands)
        else:
            x0, y0, x1, y1 = window
            w, h = x1 - x0, y1 - y0
            inside = Window(x0, y0, min(w, src.width - x0), min(h, src.height - y0))
            data = np.empty((3, h, w), dtype=np.uint8)
            data[:] = np.asarray(fill, dtype=np.uint8)[:, None, None]
            data[:, : int(inside.height), : int(inside.width)] = src.read(bands, window=inside)
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image; the format follows the suffix (.png, .jpg, .tif)."""
    drivers = {
        ".png": "PNG",
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".tif": "GTiff",
        ".tiff": "GTiff",
        ".bmp": "BMP",
    }
    suffix = Path(path).suffix.lower()
    if suffix not in drivers:
        raise ValueError(f"cannot write {path}: use one of {', '.join(drivers)}")
    h, w = image.shape[:2]
    with open_image(path, "w", driver=drivers[suffix], width=w, height=h, count=3, dtype="uint8") as dst:
        dst.write(np.moveaxis(image, -1, 0))


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 image by ``scale`` (OpenCV's ``INTER_LINEAR`` rule:
    half-pixel centres, no antialiasing), as mmcv's ``imrescale`` does."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    size = (int(h * scale + 0.5), int(w * scale + 0.5))
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
