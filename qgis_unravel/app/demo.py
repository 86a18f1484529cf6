"""`make demo`: detect objects on the bundled example scene with the project's demo model.

The example is a synthetic, georeferenced scene made by the project's deterministic generator
(a seed the demo model never saw in training), so the demo needs nothing from the internet.
The demo says plainly which model it runs; if the trained demo weights are missing it stops
with a message instead of running random weights, which would not be a detector.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_MODEL = "demo-unravelnet-synthetic"
EXAMPLE_SEED = 7001
EXAMPLE_SIZE = 1536
REPO_ROOT = Path(__file__).resolve().parents[2]


def example_scene(folder: Path) -> tuple[Path, Path]:
    """Write the example GeoTIFF and its label GeoPackage once; reuse them afterwards."""
    from ..synthetic.io import write_scene

    raster, labels = folder / "example_scene.tif", folder / "example_labels.gpkg"
    if not (raster.is_file() and labels.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        for path in (raster, labels):
            path.unlink(missing_ok=True)
        write_scene(raster, labels, seed=EXAMPLE_SEED, size=EXAMPLE_SIZE)
    return raster, labels


def describe_model() -> str:
    """One honest line about the model the demo uses, from its card."""
    from ..zoo import get_card

    card = get_card(DEMO_MODEL)
    return f"{card.title} [{card.id}]: {card.summary}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "demo", help="output folder")
    args = parser.parse_args(argv)

    from ..zoo import ZooError, get_card

    try:
        card = get_card(DEMO_MODEL)
        weights = card.bundled_path()
    except ZooError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    if not weights.is_file():
        print(f"demo: the trained demo model is missing ({weights}). It is made by "
              "'qgis-unravel train' as docs/training.md describes; the demo will not run "
              "random weights instead.", file=sys.stderr)
        return 1

    raster, labels = example_scene(args.out)
    output = args.out / "detections.gpkg"
    print(f"Model: {describe_model()}")
    print(f"Example scene: {raster} ({EXAMPLE_SIZE}x{EXAMPLE_SIZE} px, synthetic, seed {EXAMPLE_SEED})")

    from .cli import main as cli_main

    code = cli_main(["detect", str(raster), "-o", str(output), "--model", DEMO_MODEL, "--overwrite"])
    if code != 0:
        return code
    print(f"\nDetections written to {output} (open it in QGIS: it carries its style).")
    print("Accuracy against the scene's own labels (rotated IoU 0.5, VOC07 11-point AP):")
    return cli_main(["evaluate", "--raster", str(raster), "--labels", str(labels),
                     "--detections", str(output)])


if __name__ == "__main__":
    sys.exit(main())
