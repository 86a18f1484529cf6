"""DOTA ``labelTxt`` files: optional ``imagesource:``/``gsd:`` header lines, then one object per
line: ``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` (difficult 1 for hard objects; the split
tooling writes 2 for objects a patch cuts through).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

PathLike = Union[str, Path]

DIFFICULT = 1
TRUNCATED = 2


class DotaFormatError(ValueError):
    """A DOTA file or folder cannot be read; the message says what to fix."""


@dataclass
class DotaObjects:
    """Objects of one image: polygons (N, 8) in pixels, class names, difficulty flags (N,)."""

    polys: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))
    names: List[str] = field(default_factory=list)
    difficulty: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gsd: Optional[float] = None
    source: Optional[str] = None

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, keep) -> DotaObjects:
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.nonzero(keep)[0]
        return DotaObjects(
            self.polys[keep].reshape(-1, 8),
            [self.names[i] for i in keep],
            self.difficulty[keep].reshape(-1),
            self.gsd,
            self.source,
        )


def parse_labeltxt(text: str, where: str = "labelTxt") -> DotaObjects:
    """Objects of a labelTxt file's text; header lines and blank lines are skipped."""
    polys, names, diffs = [], [], []
    gsd, source = None, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("gsd", "imagesource"):
            if key.strip().lower() == "gsd":
                try:
                    gsd = float(value)
                except ValueError:
                    gsd = None  # DOTA writes "gsd:null" for images without one
            else:
                source = value.strip()
            continue
        items = line.split()
        if len(items) < 9:
            raise DotaFormatError(
                f"{where}, line {number}: expected 8 coordinates, a class and a difficulty flag, got {line!r}"
            )
        try:
            coords = [float(v) for v in items[:8]]
            difficulty = int(items[9]) if len(items) > 9 else 0
        except ValueError:
            raise DotaFormatError(f"{where}, line {number}: not numbers: {line!r}") from None
        polys.append(coords)
        names.append(items[8])
        diffs.append(difficulty)
    return DotaObjects(
        np.array(polys, dtype=np.float64).reshape(-1, 8),
        names,
        np.array(diffs, dtype=np.int64),
        gsd,
        source,
    )


def read_labeltxt(path: PathLike) -> DotaObjects:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DotaFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_labeltxt(text, str(path))


def format_labeltxt(objects: DotaObjects, header: bool = False) -> str:
    """The text of a labelTxt file (the split's annfiles have no header)."""
    lines = []
    if header:
        lines.append(f"imagesource:{objects.source or 'unknown'}")
        lines.append(f"gsd:{'null' if objects.gsd is None else repr(float(objects.gsd))}")
    for poly, name, diff in zip(objects.polys, objects.names, objects.difficulty):
        lines.append(" ".join(f"{v:.10g}" for v in poly) + f" {name} {int(diff)}")
    return "".join(line + "\n" for line in lines)


def write_labeltxt(path: PathLike, objects: DotaObjects, header: bool = False) -> None:
    Path(path).write_text(format_labeltxt(objects, header), encoding="utf-8")
