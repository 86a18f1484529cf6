"""``qgis-unravel models list|info|download``.

``qgis_unravel.app.cli`` calls ``register(subparsers)``; ``main`` runs the same commands on
their own (for tests and embedding). Each command returns an exit code and prints user errors as one line
(``error: ...``) without a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import IO, Any, Callable, Optional, Sequence

from ..zoo.cache import cache_root, cache_status, license_accepted, weights_path
from ..zoo.cards import Card, get_card, list_cards
from ..zoo.progress import ProgressBar, console_confirm
from ..zoo.resolve import ensure_weights


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``models`` command to an argparse sub-parser set; it sets ``func`` (args -> int)."""
    models = subparsers.add_parser("models", help="list, inspect and download models",
                                   description="List, inspect and download detection models.")
    sub = models.add_subparsers(dest="models_command", metavar="{list,info,download}")
    sub.required = True
    p_list = sub.add_parser("list", help="every known model and whether its weights are here")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(func=guarded(cmd_list))
    p_info = sub.add_parser("info", help="a model card in full, or what a checkpoint file holds")
    p_info.add_argument("model", help="model id, or path of a checkpoint (.pth)")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_info.set_defaults(func=guarded(cmd_info))
    p_dl = sub.add_parser("download", help="download a model's weights into the cache")
    p_dl.add_argument("model", help="model id (see 'models list')")
    p_dl.add_argument("--yes", "-y", action="store_true", help="accept the licence without asking")
    p_dl.add_argument("--force", action="store_true", help="download again even if cached")
    p_dl.set_defaults(func=guarded(cmd_download))
    return models


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so user errors become one line on stderr and exit code 1, never a traceback."""
    @functools.wraps(command)
    def run_command(args: argparse.Namespace) -> int:
        try:
            return int(command(args))
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted; a partial download is kept and resumes next time\n")
            return 130
        except ValueError as exc:  # ZooError and the detector's CheckpointError are ValueErrors
            sys.stderr.write(f"error: {exc}\n")
            return 1

    return run_command


def card_summary(card: Card) -> dict[str, Any]:
    """The facts a list shows, as plain data."""
    return {"id": card.id, "title": card.title, "dataset": card.dataset,
            "backbone": f"{card.architecture.backbone}-{card.architecture.variant}",
            "classes": card.num_classes, "availability": card.weights.availability,
            "status": cache_status(card), "license": card.license.weights}


def cmd_list(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    rows = [card_summary(c) for c in list_cards()]
    if getattr(args, "json", False):
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    header = ("id", "dataset", "backbone", "classes", "weights", "status", "license")
    table = [header] + [(r["id"], r["dataset"], r["backbone"], str(r["classes"]), r["availability"],
                         r["status"], r["license"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    out.write(f"\nCache: {cache_root()}\nDetails: qgis-unravel models info ID\n")
    return 0


def card_details(card: Card) -> dict[str, Any]:
    """Everything ``models info`` shows, as plain data."""
    from dataclasses import asdict

    data = asdict(card)
    data["file"] = str(card.file) if card.file else None
    data["status"] = cache_status(card)
    if card.weights.availability == "bundled":
        data["local_path"] = str(card.bundled_path())
    elif card.weights.filename:
        data["local_path"] = str(weights_path(card))
        data["license_accepted"] = license_accepted(card)
    return data


def cmd_info(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    path = Path(args.model).expanduser()
    if path.is_file():
        return _checkpoint_info(path, args, out)
    card = get_card(args.model)
    details = card_details(card)
    if args.json:
        out.write(json.dumps(details, indent=2, default=str) + "\n")
        return 0
    arch, w = card.architecture, card.weights
    lines = [
        f"{card.id}: {card.title}", card.summary, "",
        f"architecture  {arch.detector}, {arch.backbone}-{arch.variant} (stem {arch.stem_dim}, widths "
        f"{list(arch.widths)}, depths {list(arch.depths)}), FPN {arch.neck_channels}, {arch.angle_version}",
        f"dataset       {card.dataset}; {card.num_classes} classes: {', '.join(card.classes)}",
        f"input         {card.normalization.channel_order}, mean {list(card.normalization.mean)}, "
        f"std {list(card.normalization.std)}",
        f"tiles         {card.tiling.tile_size} px, overlap {card.tiling.overlap} px",
        f"resolution    {_gsd(card)}",
        f"thresholds    score {card.thresholds.score}, NMS IoU {card.thresholds.nms_iou}, "
        f"max {card.thresholds.max_detections} per tile",
        f"weights       {w.availability}; {', '.join(w.urls) or 'no link'}",
        f"              size {w.size_bytes or 'unknown'}, "
        f"sha256 {w.sha256 or 'unknown (recorded on first download)'}",
        f"local path    {details.get('local_path')} ({details['status']})",
    ]
    if w.note:
        lines.append(f"note          {w.note}")
    if card.source.reported_map is not None:
        lines.append(f"reported mAP  {card.source.reported_map} ({card.source.evaluation})")
    elif card.source.evaluation:
        lines.append(f"results       {card.source.evaluation}")
    lines += [f"source        {card.source.repository}", "", card.license_text(), "", "Cite:", card.citation]
    out.write("\n".join(lines).rstrip() + "\n")
    return 0


def _gsd(card: Card) -> str:
    g = card.ground_resolution_m
    if g.min is None and g.max is None:
        return g.note
    return f"{g.min if g.min is not None else '?'} to {g.max if g.max is not None else '?'} m/pixel. {g.note}"


def _checkpoint_info(path: Path, args: argparse.Namespace, out: IO[str]) -> int:
    """Load a local checkpoint safely and show the architecture read from it."""
    from ..detector.checkpoint import load_detector

    detector = load_detector(path, device="cpu")
    info = {k: v for k, v in dict(detector.info).items()}
    info["classes"] = list(detector.classes)
    if args.json:
        out.write(json.dumps(info, indent=2, default=str) + "\n")
    else:
        for key, value in info.items():
            out.write(f"{key:14s}{value}\n")
    return 0


def cmd_download(args: argparse.Namespace, out: IO[str] | None = None,
                 stdin: IO[str] | None = None) -> int:
    out = out or sys.stdout
    card = get_card(args.model)
    if card.weights.availability == "bundled":
        path = ensure_weights(card)
        out.write(f"{card.id} ships with qgis-unravel: {path}\n")
        return 0
    dest = weights_path(card)
    if dest.is_file() and not args.force:
        ensure_weights(card)
        out.write(f"{card.id} is already downloaded: {dest}\n")
        return 0
    confirm = console_confirm(assume_yes=args.yes, stdin=stdin, out=sys.stderr)
    path = ensure_weights(card, ProgressBar(card.id), confirm=confirm, force=args.force)
    out.write(f"{card.id} downloaded and verified: {path}\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``models ...`` on its own: the same commands without the rest of the console script."""
    parser = argparse.ArgumentParser(prog="qgis-unravel")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
