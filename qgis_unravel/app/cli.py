"""The ``qgis-unravel`` command line, and ``run_spec`` for the warm worker.

``run_spec(spec, emit, cancel)`` runs one detection described by a ``RunSpec``, reports
through protocol events (progress, warning, log, then exactly one result or error) and
returns the exit code: 0 done, 1 user error, 2 internal error. The resolved spec (explicit
value > model card > default) comes back in the result event. ``run_detect(argv, ...)``
turns the ``detect`` command line into a spec and calls it; ``main`` wraps that for a
terminal (progress bar, count table) or, with ``--json``, prints the events as JSON lines.
Loaded detectors are cached per (checkpoint, device) and never modified by a run, so a warm
worker that runs many detections loads each model once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..engine.errors import Cancelled, UserError
from ..engine.spec import ModelDefaults, RunSpec
from ..worker import protocol
from . import models_cli, train_cli
from .terminal import TerminalReporter

Emit = Callable[[Dict[str, Any]], None]

_DETECTORS: Dict[Tuple[str, str], Tuple[Any, ModelDefaults]] = {}


class _Parser(argparse.ArgumentParser):
    """argparse that raises a UserError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see 'qgis-unravel detect --help')")


def add_detect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``detect``; shared by the console script and ``run_detect``."""
    parser.add_argument("input", help="raster to analyse (any format GDAL reads: GeoTIFF, COG, VRT, JP2)")
    parser.add_argument("-o", "--output", help="vector file to write (.gpkg; any OGR format by extension)")
    parser.add_argument("--model", required=True,
                        help="model id (see 'qgis-unravel models list') or checkpoint path")
    parser.add_argument("--layer", help="layer name in the output (default: the output file's name)")
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the model card's, else 1024)")
    parser.add_argument("--overlap", type=int,
                        help="tile overlap in pixels (default: the model card's, else 200)")
    parser.add_argument("--score", type=float, help="minimum score (default: the model card's)")
    parser.add_argument("--iou", type=float,
                        help="IoU of the rotated NMS within each tile (default: the model card's, else 0.1)")
    parser.add_argument("--merge-iou", type=float,
                        help="IoU of the rotated NMS across tiles (default: the same as --iou)")
    parser.add_argument("--max-detections", type=int,
                        help="most detections per tile (default: the model card's)")
    parser.add_argument("--classes", help="keep only these classes, e.g. plane,ship (default: all)")
    parser.add_argument("--batch", type=int, help="tiles per network call (default: automatic, 2 today)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N (default auto: CUDA when available)")
    parser.add_argument("--fp16", action="store_true", help="half-precision autocast on CUDA")
    parser.add_argument("--bands", help="bands to use as R,G,B, e.g. 3,2,1, or one band for grey")
    parser.add_argument("--range", dest="value_range",
                        help="MIN,MAX mapped to 0..255 (default: uint8 as is, else a 2-98%% stretch)")
    parser.add_argument("--aoi", help="area of interest: 'minx,miny,maxx,maxy[,CRS]' or a polygon file")
    parser.add_argument("--gsd", type=float, help="processing resolution in metres per pixel")
    parser.add_argument("--no-seam-rule", action="store_true",
                        help="keep detections cut by tile borders even when a neighbour tile sees them whole")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output layer")
    parser.add_argument("--append", action="store_true", help="add to an existing output layer")
    parser.add_argument("--json", action="store_true", help="print JSON lines (progress, warnings, result)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def detect_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qgis-unravel detect", description="Detect objects in a raster.")
    return add_detect_arguments(parser)


def run_detect(argv: Sequence[str], emit: Emit, cancel: Optional[threading.Event] = None) -> int:
    """Run ``detect`` with CLI arguments; report through ``emit``; return the exit code."""
    return _reporting_errors(emit, lambda: _run(spec_from_argv(argv), emit, cancel))


def run_spec(spec: RunSpec, emit: Emit, cancel: Optional[threading.Event] = None) -> int:
    """Run one detection described by ``spec``; report through ``emit``; return the exit code."""
    return _reporting_errors(emit, lambda: _run(spec, emit, cancel))


def spec_from_argv(argv: Sequence[str]) -> RunSpec:
    """The ``detect`` command line as a validated (not yet resolved) RunSpec."""
    args = detect_parser().parse_args(list(argv))
    if args.output is None and not args.json:
        raise UserError("give an output file with -o OUT.gpkg")
    return spec_from_args(args)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """Only what the user typed: every option left out stays empty (the model's default)."""
    return RunSpec(
        input=args.input, output=args.output, layer=args.layer, overwrite=args.overwrite,
        append=args.append, model=args.model, device=args.device,
        tile_size=args.tile, overlap=args.overlap, batch_size=args.batch,
        score_threshold=args.score, nms_iou=args.iou, merge_iou=args.merge_iou,
        max_detections=args.max_detections,
        classes=tuple(_names(args.classes)) if args.classes else (),
        bands=tuple(_int_list(args.bands, "--bands")) if args.bands else None,
        value_range=_range(args.value_range) if args.value_range else None,
        gsd=args.gsd, aoi=args.aoi, fp16=args.fp16, seam_rule=not args.no_seam_rule,
    ).validate()


def _reporting_errors(emit: Emit, body: Callable[[], int]) -> int:
    """Turn every failure into exactly one error event and an exit code."""
    try:
        return body()
    except UserError as exc:
        emit(protocol.error(str(exc), "user"))
        return 1
    except Cancelled:
        emit(protocol.error("cancelled before anything was written", "user"))
        return 1
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except Exception as exc:
        emit({"type": "log", "message": traceback.format_exc()})
        emit(protocol.error(f"internal error: {type(exc).__name__}: {exc}", "internal"))
        return 2


def _run(spec: RunSpec, emit: Emit, cancel: Optional[threading.Event]) -> int:
    from ..engine.detect import detect_raster
    from ..engine.raster import describe, open_dataset
    from ..engine.writer import driver_for, write_detections

    spec.validate()  # before anything slow happens
    if not spec.input:
        raise UserError("no input raster given")
    if not spec.model:
        raise UserError("no model given: pass a model id (see 'qgis-unravel models list') "
                        "or a checkpoint path")
    if spec.output is not None:
        driver_for(Path(spec.output))  # reject an unknown format before hours of work
    with open_dataset(spec.input) as ds:  # a bad raster fails before the model loads
        describe(ds, spec.bands)
    detector, defaults = _detector(spec.model, _device(spec.device), emit)
    spec = spec.resolve(defaults)  # the one place a run's settings are decided
    emit({"type": "log", "message": f"settings: {spec.summary()}"})
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / done * (total - done) if done else None
        emit(protocol.progress(done, total, eta, "tiles"))

    result = detect_raster(spec.input, detector, spec, progress=progress, cancel=cancel)
    for note in result.warnings + resolution_warnings(defaults, result.pixel_size_m):
        emit(protocol.warning(note))
    written = None
    if spec.output is not None:
        written = write_detections(result, spec.output, spec.layer, spec.overwrite, spec.append)
    event = {
        "type": "result",
        "output": written.path if written else None,
        "layer": written.layer if written else None,
        "count": len(result),
        "counts": result.counts(),
        "partial": result.partial,
        "model": spec.model_name,
        "features": None if written else result.features(),
        "crs": result.crs_wkt,
        "tiles": result.tiles_total,
        "seconds": round(time.monotonic() - started, 2),
        "spec": spec.to_dict(),
    }
    emit(event)
    return 0


def _device(choice: str) -> str:
    import torch

    if choice.startswith("cuda:") and torch.cuda.is_available():
        if int(choice[5:]) >= torch.cuda.device_count():
            raise UserError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _resolve(model: str, emit: Emit) -> Tuple[Path, Any]:
    """Checkpoint path and model card (None for a plain file) of ``--model``."""
    try:
        from ..zoo import resolve_model
    except ImportError:
        path = Path(model).expanduser()
        if not path.is_file():
            raise UserError(f"model checkpoint not found: {model}") from None
        return path.resolve(), None

    def progress(done: int, total: int) -> None:
        emit(protocol.progress(done, total, None, "download"))

    try:
        return resolve_model(model, progress)
    except ValueError as exc:  # the zoo's errors are ValueErrors with user-facing messages
        raise UserError(str(exc)) from None


def _detector(model: str, device: str, emit: Emit) -> Tuple[Any, ModelDefaults]:
    """Load (or reuse) the detector for ``model`` on ``device``, with the model's run defaults."""
    path, card = _resolve(model, emit)
    key = (str(path), device)
    if key not in _DETECTORS:
        from ..detector.checkpoint import load_detector

        emit({"type": "log", "message": f"loading {path.name} on {device}"})
        try:
            detector = load_detector(path, device=device)
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise UserError(f"cannot load the model {path}: {_first_line(exc)}") from None
        if card is not None:
            from ..zoo import apply_card

            try:
                apply_card(detector, card)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        if card is not None:
            defaults = ModelDefaults.from_card(card)
        else:
            defaults = ModelDefaults.from_info(getattr(detector, "info", None), name=path.stem)
        _DETECTORS[key] = (detector, defaults)
    return _DETECTORS[key]


def _int_list(text: str, flag: str) -> List[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} takes band numbers separated by commas, e.g. 3,2,1, not {text!r}") from None


def _names(text: str) -> List[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _range(text: str) -> Tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--range takes MIN,MAX, e.g. 0,3000, not {text!r}") from None
    return low, high


def resolution_warnings(defaults: ModelDefaults, gsd: Optional[float]) -> List[str]:
    """A hint when the raster's resolution is far from what the model was trained on."""
    low, high = defaults.gsd_min, defaults.gsd_max
    if gsd is None or (low is None and high is None):
        return []
    if (low is not None and gsd < low / 2) or (high is not None and gsd > high * 2):
        trained = " to ".join(f"{v:g}" for v in (low, high) if v is not None)
        return [f"the raster is processed at {gsd:.2g} m per pixel but the model was trained for "
                f"{trained} m per pixel; consider --gsd"]
    return []


# ---- the console script --------------------------------------------------------------------

class _CommandParser(argparse.ArgumentParser):
    """A usage mistake is a user error: one line and exit code 1 (argparse would use 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(1, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _CommandParser(prog="qgis-unravel", description="Oriented object detection for rasters.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_detect_arguments(sub.add_parser("detect", help="detect objects in a raster",
                                        description="Detect objects in a raster and write map features."))
    models_cli.register(sub)
    train_cli.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``qgis-unravel`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["detect"]:
        return _main_detect(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    func = getattr(args, "func", None)
    if func is None:
        parser.error(f"'{args.command}' is not available in this installation")
    return int(func(args) or 0)


def _main_detect(argv: List[str]) -> int:
    json_mode = "--json" in argv
    if any(a in ("-h", "--help") for a in argv):
        add_detect_arguments(argparse.ArgumentParser(prog="qgis-unravel detect")).print_help()
        return 0
    cancel = threading.Event()
    previous = _install_interrupt(cancel)
    try:
        if json_mode:
            return run_detect(argv, lambda event: protocol.emit(sys.stdout, event), cancel)
        return run_detect(argv, TerminalReporter(quiet="--quiet" in argv), cancel)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, nothing is written
        sys.stderr.write("\naborted: nothing was written\n")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _install_interrupt(cancel: threading.Event) -> Any:
    """First Ctrl-C: stop after the current tiles and keep what was found; second: abort."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        sys.stderr.write("\ninterrupted: finishing the current tiles (Ctrl-C again to abort)\n")

    return signal.signal(signal.SIGINT, handler)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
