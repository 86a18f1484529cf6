"""Mixed precision (autocast) for a run: which dtype, if any, the network computes in.

``amp`` is "auto", "off", "fp16" or "bf16". Autocast only ever applies on CUDA: on CPU every
setting means float32. "auto" turns mixed precision on only for the backbones listed in
``AUTO_AMP``, the ones whose fp16/bf16 detections ``bench/gpu_check.sh`` has measured close
enough to float32 on the golden models and the demo scenes (largest box difference under
``AUTO_AMP_MAX_BOX_DIFF_PX`` and mAP within ``AUTO_AMP_MAX_MAP_DROP``). Until that check has run
on a GPU the table is empty and "auto" means float32 everywhere. LEGNet's LoG stem stays
float32 under any setting (it turns autocast off for itself).
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional

from .errors import UserError

AMP_CHOICES = ("auto", "off", "fp16", "bf16")
AUTO_AMP_MAX_BOX_DIFF_PX = 0.5
AUTO_AMP_MAX_MAP_DROP = 0.005
# backbone name (the checkpoint's info["backbone"]) -> "fp16" or "bf16", once measured on a GPU.
AUTO_AMP: Dict[str, str] = {}


def resolve_amp(amp: str, device: str, backbone: Optional[str]) -> Optional[str]:
    """"fp16", "bf16" or None (float32) for this run."""
    if amp not in AMP_CHOICES:
        raise UserError(f"mixed precision {amp!r}: use one of {', '.join(AMP_CHOICES)}")
    if not str(device).startswith("cuda") or amp == "off":
        return None
    if amp == "auto":
        return AUTO_AMP.get(str(backbone or "").lower())
    return amp


def autocast(device: str, dtype_name: Optional[str]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for CUDA in ``dtype_name``, or a no-op for float32."""
    if dtype_name is None or not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    return torch.autocast(device_type="cuda", dtype=dtype)


def detector_device(detector: Any) -> str:
    return str(getattr(detector, "device", "cpu"))


def detector_backbone(detector: Any) -> Optional[str]:
    info = getattr(detector, "info", None) or {}
    return info.get("backbone")
