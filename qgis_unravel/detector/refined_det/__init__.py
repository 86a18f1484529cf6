"""Refined-Det (Rao & Zhou, IEEE GRSL 2024): cross-grid label assignment + feature refinement head."""

from .model import RefinedDet, RetinaTestConfig

__all__ = ["RefinedDet", "RetinaTestConfig"]
