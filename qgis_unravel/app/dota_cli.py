"""``qgis-unravel dota split|test|eval|synth``: the DOTA tooling on the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..training.dota.split import SPLITS, SplitConfig
from .usage import UsageError


def split_config(name: str, size: Optional[int] = None, gap: Optional[int] = None, rates=None) -> SplitConfig:
    """A named split ("ss" or "ms") with optional overrides (tests and small data use small patches)."""

    if name not in SPLITS:
        raise UsageError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    base = SPLITS[name]
    cfg = SplitConfig(
        size or base.size,
        base.gap if gap is None else gap,
        tuple(rates) if rates else base.rates,
        base.img_rate_thr,
        base.iof_thr,
    )
    if cfg.gap >= cfg.size:
        raise UsageError(f"the gap ({cfg.gap}) must be smaller than the patch size ({cfg.size})")
    return cfg


def add_split_options(p) -> None:
    p.add_argument("--split", default="ss", help="ss (1024 px, gap 200) or ms (gap 500, rates 0.5/1/1.5)")
    p.add_argument("--patch-size", type=int, help="override the split's patch size")
    p.add_argument("--gap", type=int, help="override the split's gap (overlap) in pixels")
    p.add_argument("--rates", type=float, nargs="+", help="override the split's scales")


def split_from_args(args) -> SplitConfig:
    return split_config(args.split, args.patch_size, args.gap, args.rates)


def add_dota(sub, guarded) -> None:
    p = sub.add_parser("dota", help="DOTA-format data: split, test (merge + Task1), eval, synth")
    dsub = p.add_subparsers(dest="dota_command", required=True)

    s = dsub.add_parser("split", help="cut DOTA images into patches (images/ + annfiles/)")
    s.add_argument("--src", required=True, help="DOTA folder: images/ and labelTxt/ (labels optional)")
    s.add_argument("--out", required=True, help="new folder for the patches")
    s.add_argument("--labels", help="label folder, when not SRC/labelTxt")
    add_split_options(s)
    s.set_defaults(func=guarded(run_split))

    t = dsub.add_parser("test", help="detect on DOTA images by patches, merge, write Task1 files, score")
    t.add_argument("--model", required=True, help="detector checkpoint or model id")
    t.add_argument("--data", required=True, help="DOTA folder of original images (or a split folder)")
    t.add_argument("--labels", help="labelTxt folder for scoring (default: DATA/labelTxt when present)")
    t.add_argument("--out", required=True, help="folder for the Task1_<class>.txt submission files")
    t.add_argument("--device", default="cpu")
    t.add_argument("--batch-size", type=int, default=2)
    t.add_argument("--score-threshold", type=float, default=0.05)
    add_split_options(t)
    add_score_outputs(t)
    t.set_defaults(func=guarded(run_test))

    e = dsub.add_parser("eval", help="score Task1 submission files against labelTxt files")
    e.add_argument("--submission", required=True, help="folder of Task1_<class>.txt files")
    e.add_argument("--labels", required=True, help="DOTA folder or labelTxt folder of the images")
    e.add_argument("--version", default="1.0", help="DOTA class list: 1.0, 1.5 or 2.0")
    e.add_argument("--classes", help="comma-separated class list instead of --version")
    add_score_outputs(e)
    e.set_defaults(func=guarded(run_eval))

    y = dsub.add_parser("synth", help="write a small DOTA-format dataset from synthetic scenes")
    y.add_argument("--out", required=True)
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--count", type=int, default=4)
    y.add_argument("--size", type=int, default=512)
    y.set_defaults(func=guarded(run_synth))


def add_score_outputs(p) -> None:
    p.add_argument("--iou", type=float, default=0.5, help="polygon IoU threshold (default 0.5)")
    p.add_argument("--ap-mode", choices=("11points", "area"), default="11points")
    p.add_argument("--plot", help="write the precision-recall plot to this PNG")
    p.add_argument("--json", dest="json_out", help="write the numbers to this JSON file")


def report(result, args) -> None:
    from ..training.evaluate import format_table

    print(format_table(result))
    if args.plot:
        from ..training.prplot import plot_pr

        print(f"precision-recall plot: {plot_pr(result, args.plot)}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")


def run_split(args) -> int:
    from ..training.dota.split import split_folder

    cfg = split_from_args(args)
    count = split_folder(
        args.src, args.out, cfg, args.labels, progress=lambda i, n, name: print(f"[{i}/{n}] {name}")
    )
    print(f"{count} patches written to {args.out}")
    return 0


def _label_folder(data: Path, labels: Optional[str]) -> Optional[Path]:
    from ..training.dota.split import find_label_dir

    if labels:
        return Path(labels)
    found = find_label_dir(data)
    return None if found is None or found.name == "annfiles" else found


def run_test(args) -> int:
    from ..training.dota.infer import count_by_class, detect_folder, truth_of
    from ..training.dota.task1 import as_polygon_detections, evaluate_task1, write_submission

    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"not a folder: {data}")
    detector = _load(args.model, args.device)
    cfg = split_from_args(args)
    merged = detect_folder(
        detector,
        data,
        cfg,
        batch_size=args.batch_size,
        thresholds=dataclasses.replace(detector.default_thresholds, score=args.score_threshold),
        progress=lambda i, n: print(f"\rpatches {i}/{n}", end="", flush=True),
    )
    print()
    classes = list(detector.classes)
    files = write_submission(args.out, merged, classes)
    counts = count_by_class(merged, len(classes))
    print(
        f"{len(merged)} images, {int(counts.sum())} detections; submission: {len(files)} files in {args.out}"
    )
    labels = _label_folder(data, args.labels)
    if labels is not None:
        truth = truth_of(data if not args.labels else data, labels)
        report(evaluate_task1(as_polygon_detections(merged), truth, classes, args.iou, args.ap_mode), args)
    return 0


def _load(model: str, device: str):
    from ..detector.checkpoint import load_detector

    path = model
    try:
        from ..zoo.resolve import resolve_model

        path, _ = resolve_model(model)
    except ImportError:  # pragma: no cover - the zoo ships with the engine
        pass
    return load_detector(path, device=device)


def run_eval(args) -> int:
    from ..training.dota.classes import dota_classes
    from ..training.dota.task1 import evaluate_task1, read_submission

    classes = (
        [c.strip() for c in args.classes.split(",")] if args.classes else list(dota_classes(args.version))
    )
    root = Path(args.labels)
    truth = _truth_from(root)
    dets = read_submission(args.submission, classes)
    report(evaluate_task1(dets, truth, classes, args.iou, args.ap_mode), args)
    return 0


def _truth_from(root: Path):
    """Labels of a DOTA folder, or of a bare folder of labelTxt files."""
    from ..training.dota.labeltxt import DotaFormatError, read_labeltxt
    from ..training.dota.split import find_label_dir

    folder = find_label_dir(root) or root
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DotaFormatError(f"no labelTxt files in {folder}")
    return {f.stem: read_labeltxt(f) for f in files}


def run_synth(args) -> int:
    from ..training.dota.synthetic import write_synthetic_dota

    n = write_synthetic_dota(args.out, range(args.seed, args.seed + args.count), args.size)
    print(f"{args.count} images with {n} objects in {args.out}")
    return 0
