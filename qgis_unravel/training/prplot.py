"""The precision-recall plot (PNG) of an evaluation, one curve per class."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .evaluate import EvalResult


class PlotError(RuntimeError):
    """The plot cannot be made (matplotlib missing); the message says what to install."""


def plot_pr(result: EvalResult, path: Union[str, Path]) -> Path:
    """Write the PR curves to ``path`` (PNG) with matplotlib's headless backend."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise PlotError(
            "the precision-recall plot needs matplotlib (apt install python3-matplotlib)"
        ) from exc
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    for c in result.classes:
        if c.num_gts == 0:
            continue
        recall = [0.0, *c.recall.tolist()]
        precision = [c.precision[0] if c.precision.size else 0.0, *c.precision.tolist()]
        ax.step(recall, precision, where="post", label=f"{c.name} (AP {c.ap:.3f})")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"mAP {result.mean_ap:.3f} at rotated IoU {result.iou_thr:g} ({result.mode})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
