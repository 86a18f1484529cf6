"""The DOTA split: large images cut into fixed-size patches, with the rules of mmrotate's
``img_split.py`` (BboxToolkit), so that patches, names and labels match the published runs.

* Windows: for each (size, gap) pair the step is ``size - gap``; along an axis there is one
  window when the image fits, else ``ceil((L - size) / step + 1)``, and the last one is moved
  back to end at the edge. Windows are kept when more than ``img_rate_thr`` (0.6) of their area
  is image (only images smaller than a window have windows with less); if none is, those with
  the largest share are kept.
* Multi-scale ("ms") keeps the patch size and changes the window: rate r uses windows of
  ``int(size / r)`` with gaps ``int(gap / r)``; the training pipeline resizes patches to ``size``.
* Objects: a polygon belongs to a window when at least ``iof_thr`` (0.7) of its area is inside;
  it keeps its whole polygon (translated, not clipped), and when it is not wholly inside its
  difficulty becomes 2 ("truncated").
* Patches are named ``<image>__<window size>__<x>___<y>``; patches of images smaller than the
  window are padded bottom/right with the configs' padding colour.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .images import IMAGE_SUFFIXES, image_size, read_rgb, write_image
from .labeltxt import TRUNCATED, DotaFormatError, DotaObjects, read_labeltxt, write_labeltxt
from .polygon import iof_window

PathLike = Union[str, Path]

IMG_RATE_THR = 0.6
IOF_THR = 0.7


@dataclass(frozen=True)
class SplitConfig:
    """Patch size, gap (overlap) and window scales of a split."""

    size: int = 1024
    gap: int = 200
    rates: Tuple[float, ...] = (1.0,)
    img_rate_thr: float = IMG_RATE_THR
    iof_thr: float = IOF_THR

    def windows_sizes(self) -> List[Tuple[int, int]]:
        """(window size, gap) per scale, as ``img_split.py`` derives them."""
        return [(int(self.size / r), int(self.gap / r)) for r in self.rates]


# The split configs of the published recipes: ss_trainval.json / ms_trainval.json.
SPLITS: Dict[str, SplitConfig] = {
    "ss": SplitConfig(1024, 200, (1.0,)),
    "ms": SplitConfig(1024, 500, (0.5, 1.0, 1.5)),
}


def axis_starts(length: int, size: int, step: int) -> List[int]:
    """Window starts along one axis (the last one moved back to end at the edge)."""
    count = 1 if length <= size else math.ceil((length - size) / step + 1)
    starts = [step * i for i in range(count)]
    if len(starts) > 1 and starts[-1] + size > length:
        starts[-1] = length - size
    return starts


def sliding_windows(
    width: int, height: int, pairs: Sequence[Tuple[int, int]], img_rate_thr: float = IMG_RATE_THR
) -> np.ndarray:
    """(K, 4) windows x0, y0, x1, y1 of an image for (size, gap) pairs, x-major like the tooling."""
    windows = []
    for size, gap in pairs:
        if size <= gap:
            raise ValueError(f"a window of {size} px cannot have a gap of {gap} px")
        step = size - gap
        for x in axis_starts(width, size, step):
            for y in axis_starts(height, size, step):
                windows.append((x, y, x + size, y + size))
    win = np.array(windows, dtype=np.int64).reshape(-1, 4)
    inside = win.copy()
    inside[:, 0::2] = np.clip(inside[:, 0::2], 0, width)
    inside[:, 1::2] = np.clip(inside[:, 1::2], 0, height)
    rate = ((inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])) / (
        (win[:, 2] - win[:, 0]) * (win[:, 3] - win[:, 1])
    )
    if not (rate > img_rate_thr).any():
        rate[np.abs(rate - rate.max()) < 0.01] = 1.0
    return win[rate > img_rate_thr]


def window_objects(objects: DotaObjects, window: Sequence[int], iof_thr: float = IOF_THR) -> DotaObjects:
    """The objects a window teaches, in window pixels; those cut by the window get difficulty 2."""
    iof = iof_window(objects.polys, window)
    keep = np.nonzero(iof >= iof_thr)[0]
    out = objects.subset(keep)
    out.polys = out.polys - np.tile([window[0], window[1]], 4)
    out.difficulty = np.where(iof[keep] < 1, TRUNCATED, out.difficulty)
    return out


_PATCH = re.compile(r"^(?P<image>.+)__(?P<size>\d+)__(?P<x>\d+)___(?P<y>\d+)$")


def patch_name(image_id: str, size: int, x: int, y: int) -> str:
    return f"{image_id}__{size}__{x}___{y}"


def parse_patch_name(name: str) -> Tuple[str, int, int, int]:
    """(image id, window size, x, y) of a patch name (without suffix)."""
    suffix = Path(name).suffix
    stem = name[: -len(suffix)] if suffix.lower() in (*IMAGE_SUFFIXES, ".txt") else name
    m = _PATCH.match(Path(stem).name)
    if m is None:
        raise DotaFormatError(f"{name!r} is not a DOTA patch name (<image>__<size>__<x>___<y>)")
    return m["image"], int(m["size"]), int(m["x"]), int(m["y"])


# folders -------------------------------------------------------------------------------
@dataclass
class DotaImage:
    """One image of a DOTA folder and its label file (None for test images)."""

    image: Path
    labels: Optional[Path]

    @property
    def id(self) -> str:
        return self.image.stem


def find_label_dir(root: Path) -> Optional[Path]:
    """The label folder of a DOTA folder: ``labelTxt``, ``annfiles`` or DOTA's
    ``labelTxt-v1.0/labelTxt`` style nesting; None when there is none (test images)."""
    for name in ("labelTxt", "annfiles"):
        if (root / name).is_dir():
            return root / name
    for sub in sorted(root.glob("labelTxt*")):
        if sub.is_dir():
            nested = sub / "labelTxt"
            return nested if nested.is_dir() else sub
    return None


def list_images(root: PathLike, labels: Optional[PathLike] = None) -> List[DotaImage]:
    """Images of a DOTA folder (``images/`` plus a label folder, see ``find_label_dir``)."""
    root = Path(root)
    image_dir = root / "images" if (root / "images").is_dir() else root
    label_dir = Path(labels) if labels else find_label_dir(root)
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DotaFormatError(
            f"no images in {image_dir}; a DOTA folder holds images/ (PNG) and labelTxt/ (one .txt per image)"
        )
    out = []
    for f in files:
        txt = label_dir / f"{f.stem}.txt" if label_dir is not None else None
        out.append(DotaImage(f, txt if txt is not None and txt.is_file() else None))
    if label_dir is not None and not any(i.labels for i in out):
        raise DotaFormatError(f"no label file in {label_dir} matches an image of {image_dir}")
    return out


def read_objects(item: DotaImage) -> DotaObjects:
    return read_labeltxt(item.labels) if item.labels is not None else DotaObjects()


@dataclass
class Patch:
    """A window of a DOTA image and the objects it teaches (window pixels)."""

    image: Path
    image_id: str
    window: Tuple[int, int, int, int]
    objects: DotaObjects

    @property
    def name(self) -> str:
        x0, y0, x1, _ = self.window
        return patch_name(self.image_id, x1 - x0, x0, y0)


def image_patches(item: DotaImage, config: SplitConfig) -> List[Patch]:
    """All patches of one image under a split config."""
    width, height = image_size(item.image)
    objects = read_objects(item)
    windows = sliding_windows(width, height, config.windows_sizes(), config.img_rate_thr)
    return [
        Patch(item.image, item.id, tuple(int(v) for v in w), window_objects(objects, w, config.iof_thr))
        for w in windows
    ]


def iter_patches(items: Sequence[DotaImage], config: SplitConfig) -> Iterator[Patch]:
    for item in items:
        yield from image_patches(item, config)


def split_folder(
    src: PathLike,
    out: PathLike,
    config: SplitConfig,
    labels: Optional[PathLike] = None,
    suffix: str = ".png",
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> int:
    """Write ``out/images/<patch>.png`` and ``out/annfiles/<patch>.txt`` for every patch; the count.

    Like the tooling it refuses to write into an existing folder, so a half-finished split is
    never mistaken for a finished one: it is written under ``out.partial`` and renamed at the end.
    """
    out = Path(out)
    if out.exists():
        raise DotaFormatError(f"{out} already exists; give a new folder for the split")
    items = list_images(src, labels)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "annfiles").mkdir()
    count = 0
    for n, item in enumerate(items):
        for patch in image_patches(item, config):
            write_image(tmp / "images" / f"{patch.name}{suffix}", read_rgb(patch.image, patch.window))
            write_labeltxt(tmp / "annfiles" / f"{patch.name}.txt", patch.objects)
            count += 1
        if progress is not None:
            progress(n + 1, len(items), item.id)
    tmp.rename(out)
    return count
