"""MANIFEST of the golden folder: one ``sha256  size  path`` line per data file."""

from __future__ import annotations

import hashlib
from pathlib import Path

NAME = "MANIFEST"
NOT_LISTED = {NAME, "README.md"}


def write(folder: Path) -> str:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in NOT_LISTED or rel.startswith("."):
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.stat().st_size}  {rel}")
    text = "\n".join(lines) + "\n"
    (folder / NAME).write_text(text, encoding="utf-8")
    return text
