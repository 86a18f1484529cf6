"""A dependency-free text progress bar with running losses and an ETA."""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional, TextIO


class ProgressBar:
    """Redraws one line on a terminal; prints a plain line every ``every`` steps elsewhere."""

    def __init__(self, total: int, start: int = 0, stream: Optional[TextIO] = None, every: int = 20) -> None:
        self.total = total
        self.start = start
        self.stream = stream or sys.stderr
        self.every = every
        self.t0 = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, values: Dict[str, float]) -> None:
        elapsed = time.monotonic() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        stats = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        line = f"[{bar}] {done}/{self.total} {stats} | {_clock(elapsed)} elapsed, eta {_clock(eta)}"
        if self.tty:
            self.stream.write("\r" + line[:200])
            if done >= self.total:
                self.stream.write("\n")
        elif done % self.every == 0 or done >= self.total:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
