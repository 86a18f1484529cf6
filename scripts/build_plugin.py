"""Build the QGIS plugin zip for "Plugins > Install from ZIP".

The zip holds one top-level folder, ``qgis_unravel/``, which is the Python package plus
``metadata.txt``, ``resources/`` and the model cards from ``models/``, with the weights of the
UnravelNet demo model (``ZIP_MODELS``; its card says ``"availability": "bundled"``), so a zip
install runs offline at once. No other weights: users download those, and the QGIS plugin
repository refuses zips over 25 MB, a limit this script enforces.

Usage: python scripts/build_plugin.py [--out DIR]   (prints the zip's path)
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = "qgis_unravel"
MAX_BYTES = 25_000_000  # plugins.qgis.org's upload limit (QGIS-Django PLUGIN_MAX_UPLOAD_SIZE)
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = {".pyc", ".pyo", ".pth", ".pt", ".ckpt", ".part", ".tmp"}


def plugin_version() -> str:
    text = (REPO / "metadata.txt").read_text(encoding="utf-8")
    match = re.search(r"^version=(\S+)", text, re.M)
    if not match:
        raise SystemExit("metadata.txt has no version= line")
    return match.group(1)


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not (set(path.relative_to(root).parts) & SKIPPED_DIRS):
            if path.suffix not in SKIPPED_SUFFIXES:
                yield path


# The repository's 25 MB budget holds one demo model: the UnravelNet one, which the dialog
# preselects. Other bundled weights (the Refined-Det demo) ship with the Python package and
# the repository; a zip install lists them as "weights missing from this installation".
ZIP_MODELS = ("demo-unravelnet-synthetic",)


def bundled_weights() -> list[Path]:
    """The weight files of ZIP_MODELS, whose cards declare them as shipped with the plugin."""
    import json

    found = []
    for card in sorted((REPO / "models").glob("*.json")):
        if card.stem not in ZIP_MODELS:
            continue
        weights = json.loads(card.read_text(encoding="utf-8")).get("weights", {})
        if weights.get("availability") == "bundled" and weights.get("path"):
            path = REPO / "models" / weights["path"]
            if not path.is_file():
                raise SystemExit(f"{card.name} bundles {weights['path']}, which is missing")
            found.append(path)
    return found


def plugin_entries() -> Iterator[tuple[Path, str]]:
    """(source file, name inside the zip) for everything the plugin needs."""
    yield REPO / "metadata.txt", f"{PLUGIN_DIR}/metadata.txt"
    for name in ("LICENSE", "README.md"):
        if (REPO / name).is_file():
            yield REPO / name, f"{PLUGIN_DIR}/{name}"
    for path in _files(REPO / PLUGIN_DIR):
        yield path, f"{PLUGIN_DIR}/{path.relative_to(REPO / PLUGIN_DIR).as_posix()}"
    for folder in ("resources", "models"):
        for path in _files(REPO / folder):
            yield path, f"{PLUGIN_DIR}/{folder}/{path.relative_to(REPO / folder).as_posix()}"
    for path in bundled_weights():
        yield path, f"{PLUGIN_DIR}/models/{path.name}"


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"qgis_unravel-{plugin_version()}.zip"
    partial = target.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for source, name in plugin_entries():
            archive.write(source, name)
    size = partial.stat().st_size
    if size > MAX_BYTES:
        partial.unlink()
        raise SystemExit(f"plugin zip would be {size / 1e6:.1f} MB, over the repository's "
                         f"{MAX_BYTES / 1e6:.0f} MB limit")
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
