"""LEGNet backbone (the reference registers it as ``LWEGNet``), natively in PyTorch.

The module tree mirrors the April 2025 reference code so that mmrotate checkpoints load with
unchanged key names: ``Stem.*``, ``stages.{0..6}.*`` (even indices hold blocks, odd indices hold
DRFD downsamplers) and ``norm{0,2,4,6}``. Facts the keys do not show (ReLU everywhere, BN eps
1e-5, the DRFD max pool, the order of every residual) follow the reference forward pass.

Things that are easy to get wrong, and why the code looks the way it does:

* ``LFEA.conv2d`` and ``LFEA.block`` are one module under two names, so both key sets exist in
  a checkpoint; ``parameters()`` counts them once.
* The "fixed" LoG, Gaussian and Scharr filters are trainable conv weights stored in every
  checkpoint. They are always loaded, never rebuilt.
* The reference LoG initialisation divides by a float32 rounding residue, so trained checkpoints
  carry LoG taps of order 1e6..1e7. The LoG stem therefore always runs in float32, even under
  ``torch.autocast``; :attr:`LEGNet.float32_modules` names the submodules a caller must keep in
  float32 when it casts the model to a lower precision (:meth:`LEGNet.cast_` does that).

Speed: ``load_detector`` folds the BatchNorms that directly follow a convolution (in Sequentials,
and the pairs named in ``bn_folds``) into it, once, by :mod:`..folding`, and sets
:attr:`LEGNet.channels_last` for CPU inference: the same function up to float32 rounding. As
built, the model evaluates exactly like the reference; training always runs unfolded.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..state_dict import strip_prefix
from .common import cpu_channels_last

__all__ = [
    "LEGNet",
    "build_from_state_dict",
    "lfea_kernel_size",
    "matches",
    "remap_legacy_keys",
]

_BN_EPS = 1e-5
_CONV_EXTRA_HIDDEN = 64
_MARKER_KEY = "Stem.LoG.conv_init.weight"


def lfea_kernel_size(channels: int) -> int:
    """Default LFEA channel-attention kernel size for a width (ECA-style rule of the reference).

    Checkpoints store the size as a shape; :func:`build_from_state_dict` reads it from there.
    """
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


def _gaussian_taps(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian, used only as the starting value of a fresh (untrained) model."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).float()


def _log_taps(size: int, sigma: float) -> Tensor:
    """Zero-mean Laplacian-of-Gaussian with unit L1 norm: a well-scaled start for a fresh model.

    The reference's starting value is this shape scaled by a rounding residue (about 2.7e7 with
    the opposite sign); checkpoints carry their own values, so the scale only matters for training.
    """
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    r2 = ax[:, None] ** 2 + ax[None, :] ** 2
    k = (r2 - 2 * sigma**2) / (2 * math.pi * sigma**4) * torch.exp(-r2 / (2 * sigma**2))
    k = k - k.mean()
    return (k / k.abs().sum()).float()


_SCHARR_X = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]])


def _depthwise(channels: int, size: int, taps: Tensor | None = None) -> nn.Conv2d:
    """Depthwise conv without bias, optionally starting from the given taps in every channel."""
    conv = nn.Conv2d(channels, channels, size, padding=size // 2, groups=channels, bias=False)
    if taps is not None:
        with torch.no_grad():
            conv.weight.copy_(taps.expand_as(conv.weight))
    return conv


def _drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth per sample; the identity at inference."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class _ConvExtra(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a fixed hidden width (64 in every released model)."""

    def __init__(self, channels: int, hidden: int = _CONV_EXTRA_HIDDEN) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            _bn(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            _bn(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
            _bn(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class _ScharrEdge(nn.Module):
    """Edge prior: gradient magnitude of learned (Scharr-initialised) filters, then a bottleneck."""

    def __init__(self, channels: int, extra_hidden: int) -> None:
        super().__init__()
        self.conv_x = _depthwise(channels, 3, _SCHARR_X)
        self.conv_y = _depthwise(channels, 3, _SCHARR_X.t().contiguous())
        self.norm = _bn(channels)
        self.conv_extra = _ConvExtra(channels, extra_hidden)

    def forward(self, x: Tensor) -> Tensor:
        # Squares in at least float32: in float16 a gradient above 256 would overflow when
        # squared; the magnitude itself fits, so it goes back to the working dtype.
        gx, gy = self.conv_x(x), self.conv_y(x)
        working = gx.dtype
        wide = torch.promote_types(working, torch.float32)
        gx, gy = gx.to(wide), gy.to(wide)
        edge = F.relu(self.norm(torch.sqrt(gx * gx + gy * gy).to(working)))
        return self.conv_extra(x + edge)


class _GaussianBranch(nn.Module):
    """Gaussian prior: relu(bn(blur(x))), optionally refined by a bottleneck on ``x + blur``."""

    bn_folds = ((("gaussian",), "norm"),)

    def __init__(self, channels: int, size: int, sigma: float, extra_hidden: int | None) -> None:
        super().__init__()
        self.gaussian = _depthwise(channels, size, _gaussian_taps(size, sigma))
        self.norm = _bn(channels)
        self.conv_extra = None if extra_hidden is None else _ConvExtra(channels, extra_hidden)

    def forward(self, x: Tensor) -> Tensor:
        g = F.relu(self.norm(self.gaussian(x)))
        if self.conv_extra is None:
            return g
        return self.conv_extra(x + g)


class _DRFD(nn.Module):
    """Downsampler C -> 2C at stride 2: a conv branch and a max-pool branch, fused by a 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        out = channels * 2
        self.conv = nn.Conv2d(channels, out, 3, padding=1, groups=channels)
        self.conv_c = nn.Conv2d(out, out, 3, stride=2, padding=1, groups=out)
        self.norm_c = _bn(out)
        self.norm_m = _bn(out)
        self.fusion = nn.Conv2d(2 * out, out, 1)
        self.gaussian = _GaussianBranch(out, 5, 0.5, extra_hidden=None)
        self.norm_g = _bn(out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.norm_g(x + self.gaussian(x))
        pooled = self.norm_m(F.max_pool2d(x, 3, stride=2, padding=1))
        strided = self.norm_c(F.relu(self.conv_c(x)))  # ReLU before BN, as in the reference
        return self.fusion(torch.cat([strided, pooled], dim=1))


class _LFEA(nn.Module):
    """Attention-guided 3x3 conv with an ECA-style channel gate, then a residual BN."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), _bn(channels), nn.ReLU()
        )
        # One module under two names: checkpoints hold both key sets with identical tensors.
        self.conv2d = conv
        self.block = conv
        self.conv1d = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.norm = _bn(channels)

    def forward(self, x: Tensor, att: Tensor) -> Tensor:
        a = self.conv2d(x * att + x)
        # Channels become the length axis of a 1-channel sequence: (B, C, 1, 1) -> (B, 1, C).
        # Kept as strided views (not a contiguous copy): conv1d then takes the same kernel path
        # as the reference, which matters for bit-level agreement.
        seq = F.adaptive_avg_pool2d(a, 1).squeeze(-1).transpose(1, 2)
        gate = torch.sigmoid(self.conv1d(seq)).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)
        return self.norm(x + a * gate)


class _LFEBlock(nn.Module):
    """One LEGNet block: edge (stage 1) or Gaussian (later stages) prior, LFEA, MLP, residual."""

    # The block's norm directly follows the MLP's last 1x1 conv (drop-path is the identity then).
    bn_folds = ((("mlp.3",), "norm"),)

    def __init__(
        self, dim: int, edge_prior: bool, mlp_hidden: int, kernel_size: int, extra_hidden: int, drop: float
    ) -> None:
        super().__init__()
        self.drop = drop
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, mlp_hidden, 1, bias=False),
            _bn(mlp_hidden),
            nn.ReLU(),
            nn.Conv2d(mlp_hidden, dim, 1, bias=False),
        )
        self.LFEA = _LFEA(dim, kernel_size)
        if edge_prior:
            self.Scharr_edge = _ScharrEdge(dim, extra_hidden)
        else:
            self.gaussian = _GaussianBranch(dim, 5, 1.0, extra_hidden)
        self.norm = _bn(dim)

    def forward(self, x: Tensor) -> Tensor:
        prior = self.Scharr_edge if hasattr(self, "Scharr_edge") else self.gaussian
        y = self.LFEA(x, prior(x))
        return x + self.norm(_drop_path(self.mlp(y), self.drop, self.training))


class _Stage(nn.Module):
    """A run of blocks at one width (keys ``stages.N.blocks.M``)."""

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class _LoGFilter(nn.Module):
    """7x7 conv then a Laplacian-of-Gaussian edge residual; always computed in float32.

    Trained LoG taps reach ~1e7 and ``norm1`` statistics ~1e12: beyond float16, and too coarse in
    bfloat16 for the near-cancelling sum of taps. Autocast is switched off here, and inputs and
    weights are promoted to float32 (float64 stays float64); the normalised result goes back to
    the caller's dtype.
    """

    def __init__(self, in_chans: int, channels: int) -> None:
        super().__init__()
        self.conv_init = nn.Conv2d(in_chans, channels, 7, padding=3)
        self.LoG = _depthwise(channels, 7, _log_taps(7, 1.0))
        self.norm1 = _bn(channels)
        self.norm2 = _bn(channels)

    def forward(self, x: Tensor) -> Tensor:
        out_dtype = x.dtype
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(dtype)
            x = F.conv2d(x, self.conv_init.weight.to(dtype), self.conv_init.bias.to(dtype), padding=3)
            edge = F.conv2d(x, self.LoG.weight.to(dtype), padding=3, groups=self.LoG.groups)
            edge = F.relu(_batch_norm_as(self.norm1, edge))
            x = _batch_norm_as(self.norm2, x + edge)
        return x.to(out_dtype)


def _batch_norm_as(bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """``bn(x)`` (train or eval) with the affine parameters cast to the dtype of ``x``."""
    if bn.running_mean is not None and bn.running_mean.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            "LEGNet's LoG stem must stay in float32 (see LEGNet.float32_modules), but its "
            f"BatchNorm statistics are {bn.running_mean.dtype}; cast the model without that submodule"
        )
    use_batch = bn.training or bn.running_mean is None
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.momentum is None and bn.num_batches_tracked is not None:
        momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(
        x,
        bn.running_mean,
        bn.running_var,
        bn.weight.to(x.dtype),
        bn.bias.to(x.dtype),
        use_batch,
        momentum,
        bn.eps,
    )


class _Stem(nn.Module):
    """Image -> stride 4: LoG edges, a stride-2 depthwise step, a Gaussian branch, then a DRFD."""

    def __init__(self, in_chans: int, stem_dim: int, extra_hidden: int, gaussian_extra: bool) -> None:
        super().__init__()
        quarter, half = stem_dim // 4, stem_dim // 2
        self.Conv_D = nn.Sequential(
            nn.Conv2d(quarter, half, 3, padding=1, groups=quarter),
            nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half),
            _bn(half),
        )
        self.LoG = _LoGFilter(in_chans, quarter)
        self.gaussian = _GaussianBranch(half, 9, 0.5, extra_hidden if gaussian_extra else None)
        self.norm = _bn(half)
        self.drfd = _DRFD(half)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv_D(self.LoG(x))
        x = self.norm(x + self.gaussian(x))
        return self.drfd(x)


class LEGNet(nn.Module):
    """LEGNet feature extractor: four maps at strides 4/8/16/32, after ``norm0/2/4/6``.

    ``stem_dim`` is the stage-1 width (32 tiny, 64 small); stage ``i`` has ``stem_dim * 2**i``
    channels. ``lfea_kernel_sizes`` (one per stage) and ``mlp_ratio`` default to the reference's
    rules; :func:`build_from_state_dict` reads them from a checkpoint instead.
    ``stem_gaussian_extra=False`` builds the March 2025 stem, whose Gaussian had no bottleneck.
    """

    requires_square = False
    #: run CPU inference on channels-last maps (oneDNN runs the many depthwise and 1x1 convs
    #: much faster that way; other float32 rounding); ``load_detector`` sets it
    channels_last = False
    #: submodules that must stay float32 when the rest of the model is cast to float16/bfloat16
    float32_modules: tuple[str, ...] = ("Stem.LoG",)

    def __init__(
        self,
        stem_dim: int = 32,
        depths: Sequence[int] = (1, 4, 4, 2),
        *,
        in_chans: int = 3,
        mlp_ratio: float = 2.0,
        lfea_kernel_sizes: Sequence[int] | None = None,
        conv_extra_hidden: int = _CONV_EXTRA_HIDDEN,
        stem_gaussian_extra: bool = True,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if stem_dim < 4 or stem_dim % 4:
            raise ValueError(f"LEGNet stem_dim must be a positive multiple of 4, got {stem_dim}")
        if not depths or any(int(d) < 1 for d in depths):
            raise ValueError(f"LEGNet depths must be positive block counts, got {tuple(depths)}")
        widths = [stem_dim * 2**i for i in range(len(depths))]
        if lfea_kernel_sizes is None:
            lfea_kernel_sizes = [lfea_kernel_size(w) for w in widths]
        if len(lfea_kernel_sizes) != len(depths):
            raise ValueError("LEGNet needs one LFEA kernel size per stage")
        self.in_chans = in_chans
        self.stem_dim = stem_dim
        self.depths = [int(d) for d in depths]
        self.mlp_ratio = float(mlp_ratio)
        self.lfea_kernel_sizes = [int(k) for k in lfea_kernel_sizes]
        self.out_channels: list[int] = widths

        self.Stem = _Stem(in_chans, stem_dim, conv_extra_hidden, stem_gaussian_extra)
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        layers: list[nn.Module] = []
        first = 0
        for i, (width, depth) in enumerate(zip(widths, self.depths)):
            blocks = [
                _LFEBlock(
                    width,
                    edge_prior=(i == 0),
                    mlp_hidden=int(width * mlp_ratio),
                    kernel_size=self.lfea_kernel_sizes[i],
                    extra_hidden=conv_extra_hidden,
                    drop=rates[first + j],
                )
                for j in range(depth)
            ]
            first += depth
            layers.append(_Stage(blocks))
            if i < len(depths) - 1:
                layers.append(_DRFD(width))
        self.stages = nn.Sequential(*layers)
        self.out_indices = [2 * i for i in range(len(depths))]
        for idx, width in zip(self.out_indices, widths):
            self.add_module(f"norm{idx}", _bn(width))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (the stride of the coarsest output)."""
        return 2 ** (len(self.depths) + 1)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"LEGNet expects a (B, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"LEGNet needs height and width divisible by {m}, got {h}x{w}; "
                f"pad the image to {math.ceil(h / m) * m}x{math.ceil(w / m) * m}"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        self._check_input(x)
        x = self.Stem(cpu_channels_last(x, self.channels_last and not self.training))
        outs: list[Tensor] = []
        for idx, layer in enumerate(self.stages):
            x = layer(x)
            if idx % 2 == 0:
                outs.append(getattr(self, f"norm{idx}")(x))
        return tuple(outs)

    def cast_(self, dtype: torch.dtype) -> LEGNet:
        """Cast to a floating dtype in place, keeping :attr:`float32_modules` in float32.

        ``model.half()`` would turn trained LoG taps (~1e7) into inf; use this instead.
        """
        if not dtype.is_floating_point:
            raise ValueError(f"LEGNet can only be cast to a floating dtype, got {dtype}")
        kept = {name: self.get_submodule(name) for name in self.float32_modules}
        for module in kept.values():
            module.float()
        for name, module in self.named_modules():
            if any(name == k or name.startswith(k + ".") for k in kept):
                continue
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
            for key, buf in module.named_buffers(recurse=False):
                if buf.is_floating_point():
                    setattr(module, key, buf.to(dtype))
        return self

    @property
    def info(self) -> dict:
        """Architecture summary for model cards and diagnostics."""
        return {
            "backbone": "LEGNet",
            "stem_dim": self.stem_dim,
            "depths": list(self.depths),
            "mlp_ratio": self.mlp_ratio,
            "lfea_kernel_sizes": list(self.lfea_kernel_sizes),
            "stem_gaussian_extra": self.Stem.gaussian.conv_extra is not None,
            "out_channels": list(self.out_channels),
        }


# ---------------------------------------------------------------------------------------------
# Checkpoints


def matches(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> bool:
    """True when the state_dict holds a LEGNet backbone under ``prefix``."""
    return f"{prefix}{_MARKER_KEY}" in state_dict


_BLOCK_KEY = re.compile(r"^(?P<head>(?:.*\.)?stages\.\d+\.blocks\.\d+\.)(?P<tail>.+)$")
_LEGACY_RENAMES = (
    ("EGA.Scharr_edge.", "Scharr_edge."),
    ("EGA.gaussian.", "gaussian."),
    ("conv2d.", "LFEA.conv2d."),
    ("block.", "LFEA.block."),
    ("conv1d.", "LFEA.conv1d."),
    ("norm1.", "norm."),
    ("norm.", "LFEA.norm."),
    ("mlp.", "mlp."),
)


def _is_legacy(state_dict: Mapping[str, Tensor]) -> bool:
    return any(".EGA." in k and _BLOCK_KEY.match(k) for k in state_dict)


def _legacy_tail(head: str, tail: str, state_dict: Mapping[str, Tensor]) -> str:
    if tail.startswith("EGA.conv_extra."):
        edge = f"{head}EGA.Scharr_edge.conv_x.weight" in state_dict
        owner = "Scharr_edge" if edge else "gaussian"
        return f"{owner}.conv_extra.{tail[len('EGA.conv_extra.') :]}"
    for old, new in _LEGACY_RENAMES:
        if tail.startswith(old):
            return new + tail[len(old) :]
    raise ValueError(f"unknown key in a March-2025 LEGNet block: {head}{tail}")


def remap_legacy_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename March 2025 LEGNet block keys (``LEG_Module``) to the April 2025 layout.

    The March code (class ``LEGNet``, whose README linked ``ORCNN_LEGNet_*_dota10_ss_e36.pth``)
    kept the LFEA parts and ``EGA.*`` directly in each block and called the block's last BN
    ``norm1``; the computation is the same. Its stem Gaussian had no ``conv_extra``, which
    :func:`build_from_state_dict` detects. Works with or without a ``backbone.`` prefix; a dict
    already in the new layout comes back unchanged (as a new dict).
    """
    if not _is_legacy(state_dict):
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m is None:
            out[key] = value
        else:
            out[m["head"] + _legacy_tail(m["head"], m["tail"], state_dict)] = value
    return out


def _shape(sd: Mapping[str, Tensor], key: str) -> torch.Size:
    if key not in sd:
        raise ValueError(f"LEGNet checkpoint is missing '{key}'; is it a complete LEGNet backbone?")
    return sd[key].shape


def _count_blocks(sd: Mapping[str, Tensor], stage_index: int) -> int:
    pattern = re.compile(rf"^stages\.{stage_index}\.blocks\.(\d+)\.")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    if not found or found != set(range(max(found) + 1)):
        raise ValueError(f"LEGNet checkpoint has no consecutive blocks under 'stages.{stage_index}.blocks'")
    return max(found) + 1


def _infer_config(sd: Mapping[str, Tensor]) -> dict:
    """Read every size the constructor needs from the tensor shapes."""
    conv_init = _shape(sd, _MARKER_KEY)
    stem_dim = _shape(sd, "norm0.weight")[0]
    if conv_init[0] * 4 != stem_dim:
        raise ValueError(f"LEGNet stem widths disagree: conv_init {conv_init[0]} x 4 != norm0 {stem_dim}")
    n_stages = 0
    while f"norm{2 * n_stages}.weight" in sd:
        n_stages += 1
    depths, kernels, ratios = [], [], set()
    for i in range(n_stages):
        width = stem_dim * 2**i
        depths.append(_count_blocks(sd, 2 * i))
        kernels.append(_shape(sd, f"stages.{2 * i}.blocks.0.LFEA.conv1d.weight")[-1])
        for j in range(depths[-1]):
            ratios.add(_shape(sd, f"stages.{2 * i}.blocks.{j}.mlp.0.weight")[0] / width)
    if len(ratios) != 1:
        raise ValueError(f"LEGNet checkpoint mixes MLP ratios {sorted(ratios)}; not supported")
    extra_key = "stages.0.blocks.0.Scharr_edge.conv_extra.block.0.weight"
    return dict(
        stem_dim=int(stem_dim),
        depths=depths,
        in_chans=int(conv_init[1]),
        mlp_ratio=ratios.pop(),
        lfea_kernel_sizes=[int(k) for k in kernels],
        conv_extra_hidden=int(_shape(sd, extra_key)[0]),
        stem_gaussian_extra="Stem.gaussian.conv_extra.block.0.weight" in sd,
    )


def _complete_aliases(sd: dict[str, Tensor]) -> None:
    """Fill a missing ``LFEA.block``/``LFEA.conv2d`` twin from the other name (deduplicated saves)."""
    for key in list(sd):
        for a, b in ((".LFEA.conv2d.", ".LFEA.block."), (".LFEA.block.", ".LFEA.conv2d.")):
            if a in key and key.replace(a, b) not in sd:
                sd[key.replace(a, b)] = sd[key]


def _check_twins_agree(sd: Mapping[str, Tensor]) -> None:
    for key, value in sd.items():
        if ".LFEA.conv2d." in key:
            twin = sd[key.replace(".LFEA.conv2d.", ".LFEA.block.")]
            if twin.shape != value.shape or not torch.equal(twin, value):
                raise ValueError(f"LEGNet checkpoint: '{key}' and its alias under '.LFEA.block.' differ")


def _few(keys: list[str], prefix: str, limit: int = 5) -> str:
    shown = [prefix + k for k in keys[:limit]]
    return f"{len(keys)} {shown}" if len(keys) > limit else str(shown)


def build_from_state_dict(
    state_dict: Mapping[str, Tensor], prefix: str = "backbone.", *, load_weights: bool = True
) -> LEGNet:
    """Build a LEGNet sized from the checkpoint's shapes and, by default, load its weights.

    Accepts the April 2025 layout and (via :func:`remap_legacy_keys`) the March 2025 one.
    Every key and shape is checked first, so a damaged or foreign file fails with a ValueError
    naming the offending keys. Weights are not loaded when ``load_weights`` is False or the
    tensors live on the meta device (shape-only builds). The model is returned in eval mode.
    """
    sd = remap_legacy_keys(strip_prefix(state_dict, prefix))
    if _MARKER_KEY not in sd:
        raise ValueError(f"not a LEGNet checkpoint: '{prefix}{_MARKER_KEY}' is missing")
    _complete_aliases(sd)
    model = LEGNet(**_infer_config(sd), drop_path_rate=0.0)
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in expected if k in sd and sd[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            "LEGNet checkpoint does not fit the architecture read from its shapes: "
            f"missing {_few(missing, prefix)}, unexpected {_few(unexpected, prefix)}, "
            f"wrong shape {_few(wrong, prefix)}"
        )
    if load_weights and not any(v.is_meta for v in sd.values()):
        _check_twins_agree(sd)
        model.load_state_dict(sd, strict=True)
    return model.eval()
