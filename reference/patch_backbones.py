"""Make the two upstream backbone files importable on a CPU-only reference environment.

Run by ``build_env.sh`` on files it has just taken (checksum-checked) from the upstream
repositories; the edited copies live only in the throw-away environment. The edits:

* UnravelNet builds three constant kernels with ``torch.cuda.FloatTensor``; they become
  ``torch.tensor(..., dtype=torch.float32)`` so they follow the module's device.
* Both files register themselves through a package-relative import of mmrotate's builder;
  it becomes the absolute ``mmrotate.models.builder`` so they load as a separate package.

Nothing else changes, so the numerics are the published code's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_CUDA_CONSTANT = re.compile(r"torch\.cuda\.FloatTensor\((\[\[.*?\]\])\)")
_RELATIVE_BUILDER = "from ..builder import ROTATED_BACKBONES"
_ABSOLUTE_BUILDER = "from mmrotate.models.builder import ROTATED_BACKBONES"


def device_neutral(source: str, expected_constants: int) -> str:
    """Replace the CUDA-only constant constructors; insist on the expected count."""
    edited, count = _CUDA_CONSTANT.subn(r"torch.tensor(\1, dtype=torch.float32)", source)
    if count != expected_constants:
        raise SystemExit(f"expected {expected_constants} CUDA constants, found {count}")
    if "torch.cuda." in edited:
        raise SystemExit("a CUDA-only call is left in the backbone source")
    return edited


def absolute_registry(source: str) -> str:
    """Import mmrotate's backbone registry by its absolute name."""
    if source.count(_RELATIVE_BUILDER) != 1:
        raise SystemExit("registry import not found exactly once")
    return source.replace(_RELATIVE_BUILDER, _ABSOLUTE_BUILDER)


def main(src_dir: str, package_dir: str) -> None:
    src, pkg = Path(src_dir), Path(package_dir)
    pkg.mkdir(parents=True, exist_ok=True)
    unravelnet = (src / "unravelnet.py").read_text(encoding="utf-8")
    legnet = (src / "legnet.py").read_text(encoding="utf-8")
    (pkg / "unravelnet.py").write_text(absolute_registry(device_neutral(unravelnet, 3)), encoding="utf-8")
    (pkg / "legnet.py").write_text(absolute_registry(device_neutral(legnet, 0)), encoding="utf-8")
    (pkg / "__init__.py").write_text(
        '"""UnravelNet and LEGNet, registered in mmrotate\'s backbone registry on import."""\n'
        "from . import legnet, unravelnet  # noqa: F401\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
