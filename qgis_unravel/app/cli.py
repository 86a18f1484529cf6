"""The ``qgis-unravel`` command line, and ``run_detect`` for the QGIS plugin's worker.

``run_detect(argv, emit, cancel)`` is the whole ``detect`` command as a function that
reports through protocol events (progress, warning, log, then exactly one result or
error) and returns the exit code: 0 done, 1 user error, 2 internal error. ``main`` wraps
it for a terminal (progress bar, count table) or, with ``--json``, prints the events as
JSON lines. Loaded detectors are cached per (checkpoint, device), so a warm worker that
runs many detections loads each model once.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..engine.errors import Cancelled, UserError
from ..engine.options import DEFAULT_MERGE_IOU, DetectOptions
from ..worker import protocol
from . import models_cli, train_cli
from .terminal import TerminalReporter

Emit = Callable[[Dict[str, Any]], None]

_DETECTORS: Dict[Tuple[str, str], Tuple[Any, Dict[str, Any]]] = {}


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
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the model's, usually 1024)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the model's, 200)")
    parser.add_argument("--score", type=float, help="minimum score (default: the model's)")
    parser.add_argument("--iou", type=float, default=DEFAULT_MERGE_IOU,
                        help=f"IoU of the rotated NMS within and across tiles (default {DEFAULT_MERGE_IOU})")
    parser.add_argument("--max-detections", type=int, help="most detections per tile (default: the model's)")
    parser.add_argument("--batch", type=int, default=2, help="tiles per network call (default 2)")
    parser.add_argument("--device", default="auto", type=_device_choice,
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
    try:
        args = detect_parser().parse_args(list(argv))
        return _detect(args, emit, cancel)
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


def _detect(args: argparse.Namespace, emit: Emit, cancel: Optional[threading.Event]) -> int:
    from ..engine.detect import detect_raster
    from ..engine.raster import describe, open_dataset
    from ..engine.writer import driver_for, write_detections

    if args.output is None and not args.json:
        raise UserError("give an output file with -o OUT.gpkg")
    if args.output is not None:
        driver_for(Path(args.output))  # reject an unknown format before hours of work
    if args.overwrite and args.append:
        raise UserError("--overwrite and --append exclude each other; choose one")
    options = _options(args, None)  # checks the options before anything slow happens
    with open_dataset(args.input) as ds:  # a bad raster fails before the model loads
        describe(ds, options.bands)
    detector, card = _detector(args.model, _device(args.device), emit)
    options = _options(args, card)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / done * (total - done) if done else None
        emit(protocol.progress(done, total, eta, "tiles"))

    result = detect_raster(args.input, detector, options, progress=progress, cancel=cancel)
    for note in result.warnings + _resolution_warnings(card, args, result):
        emit(protocol.warning(note))
    written = None
    if args.output is not None:
        written = write_detections(result, args.output, args.layer, args.overwrite, args.append)
    event = {
        "type": "result",
        "output": written.path if written else None,
        "layer": written.layer if written else None,
        "count": len(result),
        "counts": result.counts(),
        "partial": result.partial,
        "model": options.model_name,
        "features": None if written else result.features(),
        "crs": result.crs_wkt,
        "tiles": result.tiles_total,
        "seconds": round(time.monotonic() - started, 2),
    }
    emit(event)
    return 0


def _device_choice(text: str) -> str:
    """argparse type for --device: auto, cpu, cuda, or cuda:N for the N-th GPU."""
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid device {text!r}: use auto, cpu, cuda or cuda:N")


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


def _detector(model: str, device: str, emit: Emit) -> Tuple[Any, Any]:
    """Load (or reuse) the detector for ``model`` on ``device``."""
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
        _DETECTORS[key] = (detector, {"card": card})
    detector, extra = _DETECTORS[key]
    return detector, extra["card"]


def _options(args: argparse.Namespace, card: Any) -> DetectOptions:
    tiling = getattr(card, "tiling", None)
    thresholds = getattr(card, "thresholds", None)
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, not {args.batch}")
    if not 0 < args.iou <= 1:
        raise UserError(f"--iou must be in (0, 1], not {args.iou}")
    if args.score is not None and not 0 <= args.score <= 1:
        raise UserError(f"--score must be between 0 and 1, not {args.score}")
    return DetectOptions(
        tile_size=args.tile or getattr(tiling, "tile_size", None),
        overlap=args.overlap if args.overlap is not None else getattr(tiling, "overlap", None),
        score_threshold=args.score if args.score is not None else getattr(thresholds, "score", None),
        merge_iou=args.iou,
        max_detections=args.max_detections or getattr(thresholds, "max_detections", None),
        batch_size=args.batch,
        bands=_int_list(args.bands, "--bands") if args.bands else None,
        value_range=_range(args.value_range) if args.value_range else None,
        gsd=args.gsd,
        aoi=args.aoi,
        fp16=args.fp16,
        seam_rule=not args.no_seam_rule,
        model_name=getattr(card, "id", None) or Path(args.model).stem,
    )


def _int_list(text: str, flag: str) -> List[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} takes band numbers separated by commas, e.g. 3,2,1, not {text!r}") from None


def _range(text: str) -> Tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--range takes MIN,MAX, e.g. 0,3000, not {text!r}") from None
    return low, high


def _resolution_warnings(card: Any, args: argparse.Namespace, result: Any) -> List[str]:
    """A hint when the raster's resolution is far from what the model was trained on."""
    resolution = getattr(card, "ground_resolution_m", None)
    gsd = result.pixel_size_m
    if resolution is None or gsd is None:
        return []
    low, high = resolution.min, resolution.max
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
