"""The Oriented R-CNN network in plain PyTorch: build, load checkpoints, detect.

Names are imported lazily so that importing a submodule (a backbone, say) does not pull
in the whole detector and its ops.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CheckpointError", "OrientedRCNN", "load_detector", "save_checkpoint"]

_SOURCES = {
    "CheckpointError": "checkpoint",
    "load_detector": "checkpoint",
    "save_checkpoint": "checkpoint",
    "OrientedRCNN": "oriented_rcnn",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_SOURCES[name]}", __name__), name)
