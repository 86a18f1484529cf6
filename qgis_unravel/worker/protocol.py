"""The JSON-lines protocol between the engine and its clients.

The CLI in ``--json`` mode and the warm worker (``python -m qgis_unravel.app.worker``) write one
JSON object per line on stdout. The QGIS plugin reads those lines; it never imports torch.
Keeping the message shapes in one small module means both sides agree by construction.

Events (worker -> client), each a dict with a ``type`` key:

``hello``     ``{"type": "hello", "protocol": 1, "python": str, "torch": str|None,
                "cuda": bool, "devices": [{"index": int, "name": str, "free_mb": int}]}``
``progress``  ``{"type": "progress", "done": int, "total": int, "eta_s": float|None,
                "stage": str}``
``warning``   ``{"type": "warning", "message": str}``
``log``       ``{"type": "log", "message": str}``
``result``    ``{"type": "result", "output": str|None, "layer": str|None, "count": int,
                "counts": {class_name: int}, "partial": bool, "model": str,
                "features": [...]|None, "spec": {the resolved RunSpec}}``
``error``     ``{"type": "error", "kind": "user"|"internal", "message": str}``

Requests (client -> warm worker, on stdin), each a dict with a ``cmd`` key and an optional
``id`` echoed back in every event that answers it:

``detect``    ``{"cmd": "detect", "id": str, "spec": {RunSpec fields, see engine/spec.py}}``
``cancel``    ``{"cmd": "cancel", "id": str}``
``ping``      ``{"cmd": "ping"}`` -> a ``hello`` event
``shutdown``  ``{"cmd": "shutdown"}``
"""

from __future__ import annotations

import json
from typing import IO, Any

PROTOCOL_VERSION = 2  # 2: detect carries a RunSpec as JSON, not an argv list

EVENT_TYPES = frozenset({"hello", "progress", "warning", "log", "result", "error"})
REQUEST_COMMANDS = frozenset({"detect", "cancel", "ping", "shutdown"})


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


def encode(message: dict[str, Any]) -> str:
    """One message as a single line of JSON (no embedded newlines), newline-terminated."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def decode(line: str) -> dict[str, Any]:
    """Parse one line; raise ProtocolError when it is not a JSON object with a known kind."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"not a JSON object: {line[:200]!r}")
    kind = message.get("type", message.get("cmd"))
    if kind not in EVENT_TYPES and kind not in REQUEST_COMMANDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    return message


def emit(stream: IO[str], message: dict[str, Any]) -> None:
    """Write one message and flush, so the reader sees it at once."""
    stream.write(encode(message))
    stream.flush()


def progress(done: int, total: int, eta_s: float | None = None, stage: str = "tiles") -> dict:
    return {"type": "progress", "done": int(done), "total": int(total),
            "eta_s": None if eta_s is None else round(float(eta_s), 1), "stage": stage}


def warning(message: str) -> dict:
    return {"type": "warning", "message": str(message)}


def error(message: str, kind: str = "user") -> dict:
    if kind not in ("user", "internal"):
        raise ValueError(f"error kind must be 'user' or 'internal', not {kind!r}")
    return {"type": "error", "kind": kind, "message": str(message)}
