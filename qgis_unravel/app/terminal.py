"""What a person sees when running ``qgis-unravel detect`` in a terminal.

The engine only emits protocol events; this turns them into a progress bar with an ETA
(on stderr, so stdout stays clean for the count table), warning and error lines, and the
per-class count table at the end.
"""

from __future__ import annotations

import sys
from typing import Any, Dict


class TerminalReporter:
    """Turns protocol events into a progress bar, warnings and a count table for people."""

    def __init__(self, quiet: bool = False, out: Any = None, err: Any = None):
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._bar_shown = False

    def __call__(self, event: Dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "progress" and not self.quiet:
            self._bar(event)
        elif kind == "warning":
            self._line(f"warning: {event['message']}")
        elif kind == "error":
            self._line(f"error: {event['message']}")
        elif kind == "log" and (not self.quiet or "Traceback" in event.get("message", "")):
            self._line(event["message"].rstrip())
        elif kind == "result":
            self._end_bar()
            self.out.write(format_counts(event))
            self.out.flush()

    def _bar(self, event: Dict[str, Any]) -> None:
        done, total, eta = event["done"], max(1, event["total"]), event.get("eta_s")
        width = 30
        filled = int(width * done / total)
        eta_text = "" if eta is None else f"  ETA {_duration(eta)}"
        stage = event.get("stage", "tiles")
        bar = "#" * filled + "." * (width - filled)
        self.err.write(f"\r[{bar}] {done}/{event['total']} {stage}{eta_text}   ")
        self.err.flush()
        self._bar_shown = True

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.err.write("\n")
            self._bar_shown = False

    def _line(self, text: str) -> None:
        self._end_bar()
        self.err.write(text + "\n")
        self.err.flush()


def format_counts(event: Dict[str, Any]) -> str:
    """The per-class count table printed at the end of a run."""
    counts = event.get("counts") or {}
    width = max([len("class")] + [len(name) for name in counts])
    lines = [f"{'class':<{width}}  count", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {n:>5}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines.append(f"{'total':<{width}}  {event.get('count', 0):>5}")
    where = event.get("output")
    tail = f"{event.get('count', 0)} objects"
    if where:
        tail += f" written to {where} (layer {event.get('layer')})"
    if event.get("partial"):
        tail += " -- PARTIAL: the run was cancelled"
    return "\n".join(lines) + "\n" + tail + "\n"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
