"""BatchNorm folding for inference: done once, when a model is loaded, for every backbone.

An eval-mode BatchNorm is a per-channel affine map. When it directly follows a convolution
(``norm(conv(x))``), that map can be merged into the convolution's weight and bias, which saves
a full read and write of the feature map (``bench/bench_cpu_variants.py`` times it against the
unfolded network). :func:`fold_batchnorms` finds those pairs and prepares them:

* **Which pairs.** A ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential``,
  and the pairs a module names in its ``bn_folds`` attribute, for ``norm(conv(x))`` written in
  its own ``forward``: ``(("proj",), "norm")``, or several convs whose outputs are *summed*
  before the norm (UnravelNet's MRA: the norm scales each of them, its shift goes to the first).
* **Nothing of the checkpoint changes.** Every parameter, buffer and ``state_dict`` key stays as
  loaded; the folded weights live in non-persistent buffers of the convs. Saving, loading new
  weights or fine-tuning a loaded model see the checkpoint's tensors.
* **Only at inference.** A folded pair uses its folded weights only while the conv and the norm
  are both in eval mode; otherwise (training, or a norm kept in train mode) it runs as conv then
  norm with the original parameters, so training never sees folded weights.
* **Computed once.** The folded tensors are computed by :func:`fold_batchnorms` and computed again
  only if one of their sources changed since (an optimizer step, ``load_state_dict``, a dtype or
  device move), which the sources' version counters and storage tell.
* **Idempotent.** Folding a folded model finds nothing new to fold.
* **ReLUs in place.** A ReLU right after a Conv2d -> BatchNorm2d pair of a Sequential is switched
  to in place: its input is always a fresh map (the conv's, or the norm's in training, as in
  torchvision's ResNet), and writing it once instead of twice is a good part of the saving.

The folded conv and norm keep their classes' behaviour through subclasses swapped in place
(as ``torch.nn.utils.parametrize`` does), so references to the modules and their hooks survive.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "FoldedBatchNorm2d",
    "FoldedConv2d",
    "conv_params",
    "fold_batchnorms",
    "is_folded",
    "prepare_for_inference",
]

Pair = Tuple[Tuple[nn.Conv2d, ...], nn.BatchNorm2d]


class _Fold:
    """One norm and the conv(s) folded into it: when the fold applies, and its folded tensors."""

    def __init__(self, convs: Sequence[nn.Conv2d], norm: nn.BatchNorm2d) -> None:
        self.convs = tuple(convs)
        self.norm = norm
        self._key: Optional[tuple] = None

    def active(self) -> bool:
        """Both sides in eval mode: the norm is a fixed affine map that the convs can carry."""
        return not self.norm.training and not any(conv.training for conv in self.convs)

    def _sources(self) -> Iterator[Tensor]:
        norm = self.norm
        yield from (norm.weight, norm.bias, norm.running_mean, norm.running_var)
        for conv in self.convs:
            yield conv.weight
            if conv.bias is not None:
                yield conv.bias

    def _state(self) -> Optional[tuple]:
        """Identity of every source tensor's storage and content version (None: unknowable)."""
        try:
            return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in self._sources())
        except RuntimeError:  # inference-mode tensors keep no version counter: always recompute
            return None

    def refresh(self) -> None:
        """Compute the folded tensors if they are missing or stale."""
        state = self._state()
        if state is not None and state == self._key:
            return
        with torch.inference_mode(False), torch.no_grad():
            for conv, (weight, bias) in zip(self.convs, self._folded_params()):
                conv.bn_folded_weight = weight
                conv.bn_folded_bias = bias
        self._key = state

    def _folded_params(self) -> Iterator[Tuple[Tensor, Tensor]]:
        """Per conv: weight and bias such that the sum of the convs, then the norm, is their sum.

        Computed in at least float32 (a float16 ``running_var + eps`` loses digits), then cast
        to the conv's dtype.
        """
        norm = self.norm
        wide = torch.promote_types(norm.running_var.dtype, torch.float32)
        scale = norm.weight.to(wide) * torch.rsqrt(norm.running_var.to(wide) + norm.eps)
        shift = norm.bias.to(wide) - norm.running_mean.to(wide) * scale
        for index, conv in enumerate(self.convs):
            dtype = conv.weight.dtype
            weight = conv.weight.to(wide) * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
            bias = shift if index == 0 else torch.zeros_like(shift)
            if conv.bias is not None:
                bias = bias + conv.bias.to(wide) * scale
            yield weight.to(dtype), bias.to(dtype)


class FoldedConv2d(nn.Conv2d):
    """A ``Conv2d`` carrying the BatchNorm that follows it, at inference (see the module doc)."""

    _bn_fold: _Fold

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, *conv_params(self))


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` whose eval-mode map the preceding conv(s) apply: then the identity."""

    _bn_fold: _Fold

    def forward(self, x: Tensor) -> Tensor:
        if self._bn_fold.active():
            return x
        return super().forward(x)


def conv_params(conv: nn.Conv2d) -> Tuple[Tensor, Optional[Tensor]]:
    """The weight and bias ``conv`` computes with now: folded ones when its fold applies.

    For modules that use a conv's weights without calling the conv (UnravelNet's MRA sums four
    kernels into one).
    """
    fold = getattr(conv, "_bn_fold", None)
    if fold is None or not fold.active():
        return conv.weight, conv.bias
    fold.refresh()
    return conv.bn_folded_weight, conv.bn_folded_bias


def _declared_pairs(module: nn.Module) -> Iterator[Pair]:
    """The pairs ``module`` names in ``bn_folds``, and Conv2d -> BatchNorm2d neighbours of a Sequential."""
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for first, second in zip(layers, layers[1:]):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                yield (first,), second
    for conv_names, norm_name in getattr(module, "bn_folds", ()):
        names = (conv_names,) if isinstance(conv_names, str) else tuple(conv_names)
        convs = tuple(module.get_submodule(name) for name in names)
        yield convs, module.get_submodule(norm_name)


def _check_foldable(convs: Tuple[nn.Module, ...], norm: nn.Module) -> None:
    """Refuse pairs this code cannot fold exactly, naming the culprit (a programming error)."""
    for conv in convs:
        if type(conv) not in (nn.Conv2d, FoldedConv2d):
            raise TypeError(f"cannot fold a BatchNorm into a {type(conv).__name__}; only plain Conv2d")
        if conv.out_channels != norm.num_features:
            raise ValueError(
                f"a conv with {conv.out_channels} outputs before a BatchNorm of {norm.num_features}"
            )
    if type(norm) not in (nn.BatchNorm2d, FoldedBatchNorm2d):
        raise TypeError(f"cannot fold a {type(norm).__name__}; only plain BatchNorm2d")
    if not norm.affine or norm.running_mean is None or norm.running_var is None:
        raise ValueError("cannot fold a BatchNorm without affine parameters and running statistics")


def _fold_pair(convs: Tuple[nn.Conv2d, ...], norm: nn.BatchNorm2d) -> bool:
    """Prepare one pair; False when it already is (the same pair), an error if a part is taken."""
    _check_foldable(convs, norm)
    existing = getattr(norm, "_bn_fold", None)
    if existing is not None:
        if existing.convs != convs:
            raise ValueError("a BatchNorm is declared after two different convs")
        return False
    if any(hasattr(conv, "_bn_fold") for conv in convs):
        raise ValueError("a conv is declared before two different BatchNorms")
    fold = _Fold(convs, norm)
    for conv in convs:
        conv.__class__ = FoldedConv2d
        conv._bn_fold = fold
        conv.register_buffer("bn_folded_weight", None, persistent=False)
        conv.register_buffer("bn_folded_bias", None, persistent=False)
    norm.__class__ = FoldedBatchNorm2d
    norm._bn_fold = fold
    fold.refresh()
    return True


def _relus_after_pairs(module: nn.Module) -> Iterator[nn.ReLU]:
    """ReLUs that directly follow a Conv2d -> BatchNorm2d pair in a Sequential."""
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for conv, norm, act in zip(layers, layers[1:], layers[2:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and type(act) is nn.ReLU:
                yield act


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every Conv2d -> BatchNorm2d pair of ``model`` for inference; the number newly folded.

    Safe on any model, in any mode: folded weights are used only in eval mode, and the
    checkpoint's tensors stay untouched (see the module doc).
    """
    modules = list(model.modules())
    for relu in (act for module in modules for act in _relus_after_pairs(module)):
        relu.inplace = True
    pairs = [pair for module in modules for pair in _declared_pairs(module)]
    return sum(_fold_pair(convs, norm) for convs, norm in pairs)


def is_folded(model: nn.Module) -> bool:
    """True when some BatchNorm of ``model`` has been folded."""
    return any(isinstance(module, FoldedBatchNorm2d) for module in model.modules())


def prepare_for_inference(detector: nn.Module, channels_last: bool = True) -> nn.Module:
    """Eval mode, BatchNorms folded and, if the backbone offers it, channels-last maps on CPU.

    What ``load_detector`` does to a model it returns: same function up to float32 rounding.
    Call it after moving the model to its device (a move recomputes the folded tensors once).
    """
    detector.eval()
    fold_batchnorms(detector)
    backbone = getattr(detector, "backbone", detector)
    if hasattr(backbone, "channels_last"):
        backbone.channels_last = bool(channels_last)
    return detector
