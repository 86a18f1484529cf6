"""ImageNet ResNet backbones (torchvision's public files) for training Refined-Det.

mmdet's ``torchvision://resnetN`` means these files; their names carry the first hex digits of
their sha256 (torchvision's convention), which is checked after every download and before every
use from the cache, so a damaged or substituted file is never loaded. The files land in the
model cache, in ``imagenet/``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Dict, Optional

from .cache import cache_root
from .download import download
from .errors import ChecksumMismatchError, ZooError

BASE_URL = "https://download.pytorch.org/models/"
#: torchvision's ImageNet-1k ("V1") ResNet files, by depth.
RESNET_FILES: Dict[int, str] = {
    18: "resnet18-f37072fd.pth",
    34: "resnet34-b627a593.pth",
    50: "resnet50-0676ba61.pth",
    101: "resnet101-63fe2227.pth",
    152: "resnet152-394f9c45.pth",
}
LICENCE = (
    "torchvision's ImageNet ResNet weights (BSD-3-Clause, the torchvision licence), trained on "
    "ImageNet-1k, whose terms allow non-commercial research and education only: check that your use "
    "fits before you train on them."
)


def hash_prefix(name: str) -> str:
    """The sha256 prefix in a torchvision file name (``resnet50-0676ba61.pth`` -> ``0676ba61``)."""
    return Path(name).stem.rsplit("-", 1)[-1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resnet_weights(
    depth: int,
    root: Optional[Path] = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    base_url: Optional[str] = None,
) -> Path:
    """The cached ImageNet ResNet-``depth`` file, downloaded and verified on first use."""
    if depth not in RESNET_FILES:
        raise ZooError(f"no ImageNet weights known for ResNet-{depth}; known: {sorted(RESNET_FILES)}")
    name = RESNET_FILES[depth]
    dest = (root or cache_root()) / "imagenet" / name
    if not dest.is_file():
        download([(base_url or BASE_URL) + name], dest, progress=progress)
    digest = _sha256(dest)
    if not digest.startswith(hash_prefix(name)):
        dest.unlink()
        raise ChecksumMismatchError(
            f"{name} has sha256 {digest}, which does not start with {hash_prefix(name)} as its name "
            "says: it is damaged or not the published file, and was deleted; try again"
        )
    return dest
