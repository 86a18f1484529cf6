"""The ``train``, ``evaluate`` and ``synth`` subcommands of ``qgis-unravel``.

``register(subparsers)`` adds them to the console script (``qgis_unravel.app.cli``); ``main``
runs the same commands on their own (for tests and embedding). User errors end with a one-line
message, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..training.labels import LabelError
from ..training.prplot import PlotError
from .usage import UsageError

try:  # the engine's input errors (unreadable raster, bad bands...), when the engine is installed
    from ..engine.errors import UserError as _EngineUserError
except ImportError:  # pragma: no cover

    class _EngineUserError(Exception):  # type: ignore[no-redef]
        """Placeholder: nothing raises it."""


ARCHITECTURES = ("orcnn", "refined-det")


def _sources(args) -> list:
    from ..training.dataset import Source

    rasters: List[Path] = [Path(p) for p in (args.raster or [])]
    labels: List[Path] = [Path(p) for p in (args.labels or [])]
    if args.data_dir:
        for tif in sorted(Path(args.data_dir).glob("*.tif")):
            gpkg = tif.with_suffix(".gpkg")
            if gpkg.is_file():
                rasters.append(tif)
                labels.append(gpkg)
    if not rasters:
        raise UsageError(
            "no training data: give --raster R --labels L (pairs) or --data-dir D "
            "holding NAME.tif with NAME.gpkg"
        )
    if len(labels) == 1 and len(rasters) > 1:
        labels = labels * len(rasters)
    if len(labels) != len(rasters):
        raise UsageError(
            f"{len(rasters)} rasters but {len(labels)} label layers; give one layer per raster "
            "(or a single layer for all)"
        )
    for p in rasters + labels:
        if not p.is_file():
            raise UsageError(f"file not found: {p}")
    return [Source(r, lab, args.layer) for r, lab in zip(rasters, labels)]


# ValueError covers CheckpointError and other readable input errors; OSError covers unreadable
# files (rasterio's and GDAL's errors name the file).
USER_ERRORS = (UsageError, LabelError, OSError, ValueError, FloatingPointError, PlotError, _EngineUserError)


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command, turning user errors into a one-line message and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(command(args) or 0)
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return run


# train -----------------------------------------------------------------------------------
def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune or train an Oriented R-CNN or a Refined-Det on labelled rasters",
        description="Train on rasters plus polygon layers with a class field. Checkpoints "
        "are written in mmrotate's format (meta CLASSES).",
    )
    data = p.add_argument_group("data")
    data.add_argument("--raster", nargs="+", help="training rasters (8-bit RGB GeoTIFF or similar)")
    data.add_argument("--labels", nargs="+", help="polygon layers (GeoPackage, shapefile...), one per raster")
    data.add_argument("--data-dir", help="folder of NAME.tif rasters with NAME.gpkg label layers")
    data.add_argument(
        "--dota",
        help="DOTA-format folder: original images (images/ + labelTxt/, split on the fly) or "
        "patches (images/ + annfiles/, from 'qgis-unravel dota split')",
    )
    data.add_argument("--dota-version", default="1.0", help="DOTA class list for --dota: 1.0, 1.5 or 2.0")
    data.add_argument(
        "--difficult",
        choices=("keep", "ignore"),
        help="DOTA objects flagged difficult: train on them (keep, as mmrotate's recipes do) or "
        "leave them out (ignore, the default; the recipes keep them)",
    )
    from .dota_cli import add_split_options

    add_split_options(data)
    data.add_argument("--layer", help="layer name inside the label files (if they hold several)")
    data.add_argument(
        "--class-field", default="class", help="attribute holding the class name (default: class)"
    )
    data.add_argument("--classes", help="comma-separated class names, in model order (default: all found)")
    data.add_argument("--tile-size", type=int, default=256, help="chip size in pixels, a multiple of 32")
    data.add_argument("--overlap", type=int, default=64, help="chip overlap in pixels")
    data.add_argument(
        "--oversample-thr",
        type=float,
        default=0.0,
        help="show chips of rare classes more often: classes in fewer than this fraction of the "
        "chips are repeated (mmdet's ClassBalancedDataset; e.g. 0.3; default 0: off)",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="orcnn",
        help="detector family: orcnn (UnravelNet Oriented R-CNN, default) or refined-det "
        "(ResNet Refined-Det with cross-grid label assignment)",
    )
    model.add_argument(
        "--preset",
        help="fresh architecture; orcnn: tiny (default), small, nano or pico, or a published recipe "
        "with its backbone weights and settings (unravelnet-t-dota10, unravelnet-s-dota10, "
        "legnet-t-dota10, legnet-s-dota10); refined-det: r50 (default, the paper's), r101, r18, "
        "nano or pico",
    )
    model.add_argument("--yes", action="store_true", help="accept the backbone weights' licence (recipes)")
    model.add_argument("--from-checkpoint", help="start from a detector checkpoint (classes remapped)")
    model.add_argument(
        "--backbone-weights",
        help="start the backbone from ImageNet weights: a file (UnravelNet, or torchvision ResNet "
        "for refined-det), or 'imagenet' (refined-det: torchvision's file, downloaded once, verified)",
    )
    model.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the preset's, 0.1)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--iterations", type=int, help="default 1000, or the recipe's 36 epochs")
    opt.add_argument("--batch-size", type=int, help="images per GPU/process (default 2)")
    opt.add_argument("--lr", type=float, help="AdamW learning rate (default 1.5e-4, or the recipe's)")
    opt.add_argument("--weight-decay", type=float, default=0.05)
    opt.add_argument("--warmup-iters", type=int, help="default 500")
    opt.add_argument(
        "--steps", help="comma-separated iterations where the lr drops 10x (default: 2/3, 11/12)"
    )
    opt.add_argument("--device", default="cpu", help="cpu or cuda[:N] (torchrun: cuda = the rank's GPU)")
    opt.add_argument(
        "--sync-bn", action="store_true", help="share BatchNorm statistics over the GPUs (torchrun, CUDA)"
    )
    opt.add_argument(
        "--freeze-bn", action="store_true", help="keep BatchNorm statistics fixed (mmdet's norm_eval)"
    )
    opt.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    opt.add_argument("--threads", type=int, help="CPU threads for torch")
    opt.add_argument("--seed", type=int, default=0)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder (checkpoints, log.jsonl)")
    out.add_argument("--checkpoint-every", type=int, default=500)
    out.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=guarded(run_train))


def _build(args, classes):
    if args.arch == "refined-det":
        return _build_refined_det(args, classes)
    from ..training.model import PRESETS, build_model, from_detector_checkpoint, load_backbone
    from ..training.recipes import RECIPES

    args.preset = args.preset or "tiny"
    if args.from_checkpoint:
        model, fresh = from_detector_checkpoint(args.from_checkpoint, classes)
        print(f"started from {args.from_checkpoint}; new (untrained) classes: {', '.join(fresh) or 'none'}")
        return model
    recipe = RECIPES.get(args.preset)
    if args.preset not in PRESETS and recipe is None:
        choices = ", ".join([*PRESETS, *RECIPES])
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {choices}")
    spec = recipe.model if recipe is not None else PRESETS[args.preset]
    if args.drop_path is not None:
        spec = dataclasses.replace(spec, drop_path_rate=args.drop_path)
    model = build_model(spec, classes)
    weights = args.backbone_weights or (recipe and _fetch_backbone(recipe.backbone_card, args))
    if weights:
        loaded, total = load_backbone(model, weights)
        print(f"backbone: loaded {loaded} of {total} tensors from {weights}")
    return model


def _build_refined_det(args, classes):
    from ..training.model import REFINED_DET_PRESETS, build_refined_det, load_backbone

    if args.from_checkpoint:
        from ..detector.checkpoint import build_detector, read_checkpoint
        from ..detector.refined_det import RefinedDet

        sd, meta = read_checkpoint(args.from_checkpoint)
        model = build_detector(sd, meta)
        if not isinstance(model, RefinedDet):
            raise UsageError(
                f"{args.from_checkpoint} is not a Refined-Det checkpoint; drop --arch refined-det"
            )
        if list(model.classes) != list(classes):
            raise UsageError(
                f"{args.from_checkpoint} has the classes {', '.join(model.classes)}; pass the same with "
                "--classes (a Refined-Det head cannot be remapped to other classes)"
            )
        print(f"started from {args.from_checkpoint}")
        return model
    preset = args.preset or "r50"
    if preset not in REFINED_DET_PRESETS:
        choices = ", ".join(REFINED_DET_PRESETS)
        raise UsageError(f"unknown refined-det preset {preset!r}; choose one of {choices}")
    spec = REFINED_DET_PRESETS[preset]
    model = build_refined_det(spec, classes, pretrained_backbone=bool(args.backbone_weights))
    if args.backbone_weights == "imagenet":
        args.backbone_weights = str(_imagenet_resnet(spec))
    if args.backbone_weights:
        loaded, total = load_backbone(model, args.backbone_weights)
        print(f"backbone: loaded {loaded} of {total} tensors from {args.backbone_weights}")
    else:
        print("note: no --backbone-weights: the ResNet starts from random weights (all stages train)")
    return model


def _imagenet_resnet(spec):
    """torchvision's ImageNet ResNet file for the preset, from the cache or downloaded (verified)."""
    from ..zoo.imagenet import LICENCE, RESNET_FILES, resnet_weights

    if spec.base_channels != 64 or spec.depth not in RESNET_FILES:
        raise UsageError(
            f"no ImageNet weights fit a ResNet-{spec.depth} at base width {spec.base_channels}; "
            "use --preset r18, r50 or r101, or train without --backbone-weights"
        )
    print(f"ImageNet backbone: {LICENCE}")
    return resnet_weights(spec.depth)


def _fetch_backbone(card_id: str, args) -> str:
    """The recipe's ImageNet backbone from the zoo: rank 0 downloads (licence first), the
    other ranks wait for it."""
    from ..zoo.backbones import get_backbone_card
    from ..zoo.progress import console_confirm
    from ..zoo.resolve import ensure_weights

    card = get_backbone_card(card_id)
    if args.dist.is_main:
        path = ensure_weights(card, confirm=console_confirm(args.yes))
    args.dist.barrier()
    if not args.dist.is_main:
        path = ensure_weights(card)
    return str(path)


def run_train(args) -> int:
    from ..training.dataset import ChipDataset, discover_classes

    _join_job(args)
    _resolve(args)
    if args.dota:
        return run_train_dota(args)
    if args.tile_size % 32 or args.tile_size < 64:
        raise UsageError(f"--tile-size must be a multiple of 32 and at least 64, got {args.tile_size}")
    if args.oversample_thr < 0:
        raise UsageError(
            f"--oversample-thr must be 0 (off) or a positive fraction, got {args.oversample_thr}"
        )
    _check_device(args)
    sources = _sources(args)
    classes = (
        [c.strip() for c in args.classes.split(",") if c.strip()]
        if args.classes
        else discover_classes(sources, args.class_field)
    )
    dataset = ChipDataset(sources, classes, args.tile_size, args.overlap, args.class_field, seed=args.seed)
    _note_unknown(dataset.unknown)
    print(
        f"{len(sources)} rasters, {len(dataset)} chips of {args.tile_size} px with {dataset.num_objects()} "
        f"objects; classes: {', '.join(classes)}"
    )
    if args.oversample_thr > 0:
        from ..training.balance import class_counts

        dataset.oversample_rare_classes(args.oversample_thr)
        shown = ", ".join(f"{c} {n}" for c, n in zip(classes, class_counts(dataset.chips, len(classes))))
        print(
            f"class-balanced sampling (threshold {args.oversample_thr}): "
            f"{len(dataset)} chips per pass; objects shown per pass: {shown}"
        )
    meta = {"tile_size": args.tile_size, "overlap": args.overlap, "oversample_thr": args.oversample_thr}
    return _fit(args, dataset, classes, meta)


def _fit(args, dataset, classes, extra_meta) -> int:
    """Build the model, train on ``dataset`` and report; shared by the raster and DOTA paths."""
    from ..training.trainer import TrainConfig, Trainer

    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    if args.recipe is not None and args.iterations is None:
        args.iterations, recipe_steps = args.recipe.iterations(len(dataset), args.dist.world_size)
        steps = steps or recipe_steps
        print(
            f"recipe {args.recipe.name}: {args.recipe.epochs} epochs of {len(dataset)} patches = "
            f"{args.iterations} iterations at {args.batch_size} images x {args.dist.world_size} "
            f"process(es); lr {args.lr:g}, x0.1 at {', '.join(map(str, steps))}"
        )
    if args.recipe is not None:
        extra_meta = {**extra_meta, "recipe": args.recipe.name}
    cfg = TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters,
        steps=steps,
        device=args.device,
        amp=args.amp,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        sync_bn=args.sync_bn,
        freeze_bn=args.freeze_bn,
        extra_meta=extra_meta,
    )
    import torch

    torch.manual_seed(args.seed)  # the same initial weights on every rank and every run
    trainer = Trainer(_build(args, classes), dataset, cfg, Path(args.out), log=print, dist=args.dist)
    if args.resume:
        if trainer.resume():
            print(f"resumed at iteration {trainer.iteration} from {args.out}")
        else:
            print(f"nothing to resume in {args.out}; starting from the beginning")
    events = getattr(args, "events", None)  # set by a job run for QGIS (app/qgis_job.py)
    try:
        trainer.run(
            progress=not args.no_progress and events is None,
            should_stop=events.cancelled if events is not None else None,
            on_step=events.step if events is not None else None,
        )
    finally:
        args.dist.close()
    stopped = trainer.iteration < cfg.iterations
    print(f"{'stopped' if stopped else 'done'}: {Path(args.out) / 'latest.pth'}")
    if events is not None:
        events.result(
            output=str(Path(args.out) / "latest.pth"), partial=stopped, iteration=trainer.iteration
        )
    return 0


DEFAULTS = {"batch_size": 2, "lr": 1.5e-4, "warmup_iters": 500, "difficult": "ignore", "iterations": 1000}


def _resolve(args) -> None:
    """Fill the settings left open on the command line: the recipe's value, else the default
    (explicit > recipe > default). A recipe's iterations are set once the data are known."""
    from ..training.recipes import RECIPES

    recipe = RECIPES.get(args.preset)
    args.recipe = recipe
    if recipe is not None:
        if not args.dota:
            raise UsageError(f"the recipe {recipe.name} trains on DOTA data: give --dota FOLDER")
        if args.from_checkpoint:
            raise UsageError("a recipe starts from its ImageNet backbone; leave out --from-checkpoint")
        wanted = {
            "batch_size": recipe.batch_per_gpu,
            "lr": recipe.lr,
            "warmup_iters": recipe.warmup_iters,
            "difficult": recipe.difficult,
        }
        for key, value in wanted.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.dota_version = recipe.dota_version
        if recipe.sync_bn and args.dist.enabled and str(args.device).startswith("cuda"):
            args.sync_bn = True
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None and not (key == "iterations" and recipe is not None):
            setattr(args, key, value)


def _join_job(args) -> None:
    """Under torchrun: join the process group; only rank 0 prints."""
    from ..training.distributed import from_env

    if args.sync_bn and not str(args.device).startswith("cuda"):
        raise UsageError("--sync-bn needs CUDA GPUs; on the CPU use --freeze-bn or neither")
    args.dist = from_env(args.device)
    if not args.dist.is_main:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process's life
    elif args.dist.enabled:
        print(f"distributed: {args.dist.world_size} processes ({args.dist.backend})")


def _note_unknown(unknown: dict) -> None:
    if unknown:
        skipped = ", ".join(f"{k} ({v})" for k, v in sorted(unknown.items()))
        print(f"note: objects of classes not in the class list are ignored: {skipped}")


def _check_device(args) -> None:
    import torch

    if args.amp and not str(args.device).startswith("cuda"):
        print("note: --amp only applies on CUDA; training in float32 on the CPU")
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA GPU")
    if args.threads:
        torch.set_num_threads(args.threads)


def run_train_dota(args) -> int:
    """Train on a DOTA-format folder (original images split on the fly, or a split folder)."""
    from ..training.dota.augment import RecipeAugment
    from ..training.dota.classes import RECT_CLASSES, dota_classes
    from ..training.dota.dataset import DotaDataset
    from .dota_cli import split_from_args

    if args.raster or args.data_dir:
        raise UsageError("give either --dota or rasters (--raster/--data-dir), not both")
    if not Path(args.dota).is_dir():
        raise UsageError(f"--dota: not a folder: {args.dota}")
    _check_device(args)
    classes = (
        [c.strip() for c in args.classes.split(",") if c.strip()]
        if args.classes
        else list(dota_classes(args.dota_version))
    )
    split = split_from_args(args)
    augment = RecipeAugment([i for i, c in enumerate(classes) if c in RECT_CLASSES])
    dataset = DotaDataset(args.dota, classes, split, args.difficult, split.size, augment, args.seed)
    _note_unknown(dataset.unknown)
    print(
        f"DOTA {args.dota}: {dataset.num_patches} patches, {len(dataset)} with objects, "
        f"{dataset.num_objects()} objects (difficult: {args.difficult}); classes: {', '.join(classes)}"
    )
    meta = {"dota_split": {"size": split.size, "gap": split.gap, "rates": list(split.rates)}}
    return _fit(args, dataset, classes, {**meta, "difficult": args.difficult})


# evaluate ----------------------------------------------------------------------------------
def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="per-class AP and mAP (rotated IoU) against labelled polygons",
        description="Compare detections with a labelled polygon layer: DOTA-style AP at a "
        "rotated-IoU threshold (VOC07 11-point by default), a table and a PR plot.",
    )
    p.add_argument("--raster", nargs="+", required=True, help="rasters to evaluate on")
    p.add_argument("--labels", nargs="+", required=True, help="ground-truth polygon layers, one per raster")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="detector checkpoint to run on the rasters")
    src.add_argument("--detections", nargs="+", help="existing detection layers, one per raster")
    p.add_argument("--layer", help="layer name in the label files")
    p.add_argument("--class-field", default="class", help="class attribute of the label layer")
    p.add_argument(
        "--det-class-field",
        default="class_name",
        help="class attribute of the detection layers (default: class_name, as detect writes)",
    )
    p.add_argument("--score-field", default="score", help="score attribute of the detection layers")
    p.add_argument("--iou", type=float, default=0.5, help="rotated-IoU threshold (default 0.5)")
    p.add_argument("--ap-mode", choices=("11points", "area"), default="11points")
    p.add_argument("--tile-size", type=int, default=None, help="tile size for --model (default: the model's)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap for --model")
    p.add_argument("--score-threshold", type=float, default=0.05, help="keep detections above this score")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plot", help="write the precision-recall plot to this PNG")
    p.add_argument("--json", dest="json_out", help="write the numbers to this JSON file")
    p.set_defaults(func=guarded(run_evaluate))


def run_evaluate(args) -> int:
    from ..training.evaluate import evaluate, format_table
    from ..training.scoring import detections_from_layer, detections_from_model, truths_for

    if len(args.labels) not in (1, len(args.raster)):
        raise UsageError(f"{len(args.raster)} rasters but {len(args.labels)} label layers")
    labels = args.labels * len(args.raster) if len(args.labels) == 1 else args.labels
    for path in [*args.raster, *labels, *(args.detections or [])]:
        if not Path(path).is_file():
            raise UsageError(f"file not found: {path}")
    truths, names = truths_for(args.raster, labels, args.class_field, args.layer)
    if args.model:
        dets, classes = detections_from_model(
            args.model, args.raster, args.device, args.tile_size, args.overlap, args.score_threshold
        )
    else:
        if len(args.detections) != len(args.raster):
            raise UsageError(f"{len(args.raster)} rasters but {len(args.detections)} detection layers")
        dets, classes = detections_from_layer(
            args.detections, args.raster, args.det_class_field, args.score_field
        )
    result = evaluate_named(dets, classes, truths, names, args.iou, args.ap_mode, evaluate)
    print(format_table(result))
    if args.plot:
        from ..training.prplot import plot_pr

        print(f"precision-recall plot: {plot_pr(result, args.plot)}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    events = getattr(args, "events", None)
    if events is not None:
        events.result(output=args.plot, evaluation=result.as_dict())
    return 0


def evaluate_named(dets, det_classes, truths, truth_names, iou, mode, evaluate_fn):
    """Evaluate over the union of class names, matching detections and truth by name."""
    from ..training.evaluate import ImageDetections, ImageTruth

    classes = list(det_classes) + [n for n in sorted(set(sum(truth_names, []))) if n not in det_classes]
    index = {c: i for i, c in enumerate(classes)}
    truths_idx = [ImageTruth(t.boxes, [index[n] for n in names]) for t, names in zip(truths, truth_names)]
    dets_idx = [
        ImageDetections(d.boxes, d.scores, [index[det_classes[int(k)]] for k in d.labels]) for d in dets
    ]
    return evaluate_fn(dets_idx, truths_idx, classes, iou, mode)


# synth ---------------------------------------------------------------------------------------
def add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write synthetic labelled scenes (GeoTIFF + GeoPackage)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--count", type=int, default=1, help="number of scenes (seeds seed, seed+1, ...)")
    p.add_argument("--size", type=int, default=1024, help="scene size in pixels")
    p.add_argument("--density", type=float, default=1.0, help="object density multiplier")
    p.set_defaults(func=guarded(run_synth))


def run_synth(args) -> int:
    from ..synthetic import write_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seed, args.seed + args.count):
        scene = write_scene(
            out / f"scene_{seed}.tif", out / f"scene_{seed}.gpkg", seed, args.size, args.density
        )
        print(f"scene_{seed}: {len(scene.boxes)} objects")
    return 0


# wiring ------------------------------------------------------------------------------------
def register(subparsers) -> None:
    """Add ``train``, ``evaluate`` and ``synth`` to an argparse subparsers object."""
    from .dota_cli import add_dota

    add_train(subparsers)
    add_evaluate(subparsers)
    add_synth(subparsers)
    add_dota(subparsers, guarded)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qgis-unravel")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)

