"""Held-out accuracy of the demo model as a dialog user gets it, beside the evaluator's own figure.

    .venv/bin/python bench/heldout_map_dialog.py                 # seeds 5000-5005, 1024 px
    .venv/bin/python bench/heldout_map_dialog.py --seeds 5000-5023

The held-out scenes of docs/training.md (synthetic, never trained on) are run three ways, and
each is scored by the evaluator ``make demo`` uses (``qgis-unravel evaluate``, rotated IoU 0.5,
VOC07 11-point AP):

* ``dialog``: the plugin's dialog in a headless QGIS with fresh settings, nothing changed but the
  raster layer; its ``build_job`` spec goes through JSON (as to the worker) and the worker's run
  function (``run_spec``), which resolves it against the card; the written GeoPackages are scored;
* ``old dialog defaults``: the same, with the tile 1024 / overlap 200 / score 0.3 the dialog sent
  before the run spec (the issue's 0.944);
* ``evaluate --model``: the evaluator running the model itself (card tiling, score 0.05 so the
  whole ranking counts): the card's reported 0.980.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OLD_DIALOG_DEFAULTS = {"tile_size": 1024, "overlap": 200, "score_threshold": 0.3}


def seeds_of(text: str) -> List[int]:
    """``5000-5005`` or ``5000,5003``."""
    if "-" in text:
        first, last = (int(v) for v in text.split("-"))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(",")]


def scenes(folder: Path, seeds: List[int], size: int) -> List[Tuple[Path, Path]]:
    """(raster, labels) per seed, written once by the project's generator."""
    from qgis_unravel.synthetic.io import write_scene

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in seeds:
        raster, labels = folder / f"scene_{seed}.tif", folder / f"scene_{seed}.gpkg"
        if not (raster.is_file() and labels.is_file()):
            write_scene(raster, labels, seed=seed, size=size)
        out.append((raster, labels))
    return out


class _Iface:
    """What the dialog asks of QGIS's interface here: a map canvas."""

    def __init__(self) -> None:
        from qgis.gui import QgsMapCanvas

        self.canvas = QgsMapCanvas()

    def mapCanvas(self):  # noqa: N802 (QGIS name)
        return self.canvas


def dialog_spec(raster: Path):
    """The RunSpec an untouched dialog builds for ``raster``, as the worker receives it (JSON)."""
    from qgis.core import QgsProject, QgsRasterLayer

    from qgis_unravel.engine.spec import RunSpec
    from qgis_unravel.plugin.dialog import DetectDialog
    from qgis_unravel.plugin.runner import Runner

    layer = QgsRasterLayer(str(raster), raster.stem, "gdal")
    QgsProject.instance().addMapLayer(layer)
    iface = _Iface()
    dialog = DetectDialog(iface, Runner(iface, client_factory=lambda: None))
    try:
        dialog.layer_combo.setLayer(layer)
        _choices, job = dialog.build_job()
    finally:
        dialog.deleteLater()
        QgsProject.instance().removeMapLayer(layer.id())
    return RunSpec.from_json(job.request.to_json())


def run_like_the_worker(spec) -> Dict:
    """``spec`` through the worker's run function; its result event (with the resolved spec)."""
    from qgis_unravel.app.cli import run_spec

    events: List[Dict] = []
    code = run_spec(spec, events.append)
    results = [e for e in events if e.get("type") == "result"]
    if code != 0 or not results:
        raise SystemExit(f"run failed: {[e for e in events if e.get('type') == 'error']}")
    return results[0]


def score(rasters: List[Path], labels: List[Path], source: List[str], out: Path) -> Dict:
    """``qgis-unravel evaluate`` (what ``make demo`` prints); its JSON numbers."""
    from qgis_unravel.app.cli import main as cli_main

    argv = ["evaluate", "--raster", *map(str, rasters), "--labels", *map(str, labels), *source,
            "--json", str(out)]
    if cli_main(argv) != 0:
        raise SystemExit(f"evaluate failed: {argv}")
    return json.loads(out.read_text())


def run_variant(name: str, pairs: List[Tuple[Path, Path]], work: Path, overrides: Optional[Dict]) -> Dict:
    """Detect on every scene through the dialog's path (with ``overrides``), then score."""
    outputs, ran = [], None
    for raster, _labels in pairs:
        spec = dialog_spec(raster)
        output = work / f"{name.replace(' ', '_')}_{raster.stem}.gpkg"
        spec = replace(spec, output=str(output), overwrite=True, **(overrides or {}))
        ran = run_like_the_worker(spec)["spec"]
        outputs.append(str(output))
    numbers = score([r for r, _ in pairs], [lab for _, lab in pairs], ["--detections", *outputs],
                    work / f"{name.replace(' ', '_')}.json")
    numbers["ran"] = {k: ran[k] for k in ("tile_size", "overlap", "score_threshold", "nms_iou", "gsd")}
    return numbers


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="5000-5005", help="held-out scene seeds (docs/training.md)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--scenes", type=Path, default=HERE.parent / "out" / "heldout")
    args = parser.parse_args(argv)

    config = tempfile.mkdtemp(prefix="unravel-qgis-profile-")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = config  # fresh settings: a user who changed nothing
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()

    from qgis_unravel.app.demo import DEMO_MODEL

    pairs = scenes(args.scenes, seeds_of(args.seeds), args.size)
    work = Path(tempfile.mkdtemp(prefix="unravel-heldout-"))
    results = {
        "dialog": run_variant("dialog", pairs, work, None),
        "old dialog defaults": run_variant("old dialog defaults", pairs, work, OLD_DIALOG_DEFAULTS),
        "evaluate --model": score([r for r, _ in pairs], [lab for _, lab in pairs],
                                  ["--model", DEMO_MODEL], work / "evaluate_model.json"),
    }
    print(f"\n{len(pairs)} held-out scenes (seeds {args.seeds}, {args.size} px), model {DEMO_MODEL}")
    classes = [c["class"] for c in results["dialog"]["classes"]]
    print(f"{'run':<22}{'mAP@0.5':>9}" + "".join(f"{c:>15}" for c in classes) + "   settings that ran")
    for name, numbers in results.items():
        aps = {c["class"]: c["ap"] for c in numbers["classes"]}
        ran = numbers.get("ran", "card tiling, score 0.05")
        row = "".join(f"{aps.get(c, float('nan')):15.3f}" for c in classes)
        print(f"{name:<22}{numbers['mAP']:9.3f}{row}   {ran}")
    app.exitQgis()


if __name__ == "__main__":
    main()
