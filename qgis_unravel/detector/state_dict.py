"""State-dict helpers shared by the checkpoint loader and the backbones.

In a module of its own so that a backbone can use them without importing the loader, which
imports the backbones (no import cycle).
"""

from __future__ import annotations

from typing import Dict, Mapping

from torch import Tensor

StateDict = Dict[str, Tensor]


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> StateDict:
    """The tensors under ``prefix`` (e.g. ``"backbone."``), keyed without it; others dropped."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
