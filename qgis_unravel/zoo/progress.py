"""A terminal progress bar for downloads, and the console licence prompt.

Kept apart from the argument parsing so the engine CLI can reuse both for ``detect --model ID``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Callable, Optional

from .cards import Card
from .errors import LicenseNotAcceptedError

_MB = 1024 * 1024


class ProgressBar:
    """``bar(done, total)``: redraws one line on a terminal, prints every 10% elsewhere."""

    def __init__(self, label: str, stream: IO[str] | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self.first_done: int | None = None
        self.last_decile = -1
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: Optional[int]) -> None:
        if self.first_done is None:
            self.first_done = done
        rate = (done - self.first_done) / max(time.monotonic() - self.started, 1e-6)
        if self.interactive:
            self.stream.write("\r" + self.line(done, total, rate))
            if total is not None and done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(10 * done / total) if total else -1
        if decile > self.last_decile or (total and done >= total):
            self.last_decile = decile
            self.stream.write(self.line(done, total, rate) + "\n")
            self.stream.flush()

    def line(self, done: int, total: Optional[int], rate: float) -> str:
        speed = f"{rate / _MB:.1f} MB/s"
        if not total:
            return f"{self.label} {done / _MB:.1f} MB {speed}"
        frac = min(done / total, 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {100 * frac:5.1f}% {done / _MB:.1f}/{total / _MB:.1f} MB {speed}"


def console_confirm(assume_yes: bool = False, stdin: IO[str] | None = None,
                    out: IO[str] | None = None) -> Callable[[Card], bool]:
    """A ``confirm(card)`` for resolve_model: show the licence, then ask (or accept with --yes).

    Without a terminal nobody can answer, so it refuses and says to pass --yes.
    """
    def confirm(card: Card) -> bool:
        stream_in = stdin or sys.stdin
        stream_out = out or sys.stderr
        stream_out.write(card.license_text() + "\n")
        if assume_yes:
            stream_out.write("Licence accepted with --yes.\n")
            return True
        if not getattr(stream_in, "isatty", lambda: False)():
            raise LicenseNotAcceptedError(
                f"The licence of {card.id} must be accepted before the first download, and there "
                "is no terminal to ask on. Read it above and pass --yes to accept it.")
        stream_out.write("Accept this licence and download? [y/N] ")
        stream_out.flush()
        answer = stream_in.readline().strip().lower()
        return answer in ("y", "yes")

    return confirm
