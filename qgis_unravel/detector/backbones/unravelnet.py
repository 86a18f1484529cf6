"""UnravelNet backbone in plain PyTorch, loading mmrotate checkpoints unchanged.

The module tree mirrors ``guue/Unravelnet`` (``mmrotate/models/backbones/unravelnet.py``)
attribute for attribute, so ``state_dict()`` keys and their order are those of an mmrotate
checkpoint's ``backbone.*`` entries. The forward pass computes the same function, always with one
fused kernel for the mid-range attention. Its conv -> BatchNorm pairs (in Sequentials, and those
named in ``bn_folds``) are folded for inference by :mod:`..folding` when the model is loaded;
training always runs them unfolded. ``channels_last`` (set for inference) runs CPU maps
channels-last: the same function up to float32 rounding.

Each block splits its channels in four quarters: point attention (PA), local attention (LA),
mid-range attention (MRA) and a boundary-guided branch (BGA fed by an edge or Gaussian
prior), then mixes them with a 1x1 MLP and adds the result to the input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..folding import conv_params
from .common import DRFD, ActLayer, BlurPool, bn, check_square_input, cpu_channels_last

# The edge and Gaussian prior branches use fixed inner widths, whatever the stage width.
PRIOR_HIDDEN = 64
PRIOR_WIDE = 256
# Input sides must be a multiple of the total stride (stem 4, then three 2x downsamplings).
INPUT_MULTIPLE = 32
# The MRA blur reflect-pads by 2, so the coarsest map must be at least 3 pixels wide.
MIN_INPUT_SIZE = 3 * INPUT_MULTIPLE

class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample during training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PA(nn.Module):
    """Point attention: a per-pixel sigmoid gate from a 1x1 bottleneck (4x wider)."""

    def __init__(self, dim: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.p_conv = nn.Sequential(
            nn.Conv2d(dim, dim * 4, 1, bias=False),
            bn(dim * 4),
            act_layer(),
            nn.Conv2d(dim * 4, dim, 1, bias=False),
        )
        self.gate_fn = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.p_conv(x))


class LA(nn.Module):
    """Local attention: a dense 3x3 conv, BN and activation."""

    def __init__(self, dim: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, bias=False), bn(dim), act_layer())

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def mra_tap_positions(att_kernel: int) -> Tensor:
    """Where each tap of the four MRA kernels lands in one (k+2) x (k+2) depthwise kernel.

    The original applies, on a max-pooled and blurred map, a vertical (k, 3) and a horizontal
    (3, k) depthwise conv, plus the same two convs on a *skewed* copy of the map (row i shifted
    right by i, resp. column j shifted down by j) that is unskewed afterwards. On a square map
    the skew/conv/unskew sequence equals a plain zero-padded conv whose kernel is sheared:
    tap (a, b) of the (k, 3) kernel moves to column offset ``b - 1 - (a - k//2)``. All four
    convs read the same input and are summed, so they collapse into one conv with a
    (k+2)-wide kernel. Returns flat positions, ordered as
    ``cat([H_att1, V_att1, H_att2, V_att2])`` of the flattened weights.
    """
    if att_kernel < 1 or att_kernel % 2 == 0:
        raise ValueError(f"att_kernel must be an odd positive size, got {att_kernel}")
    half = att_kernel // 2
    side = att_kernel + 2
    along = torch.arange(att_kernel)
    across = torch.arange(3)
    a, b = along[:, None], across[None, :]  # (k, 3) kernels: a rows, b columns
    h_plain = (a + 1) * side + (b + half)
    h_skew = (a + 1) * side + (b - a + 2 * half)
    r, c = across[:, None], along[None, :]  # (3, k) kernels: r rows, c columns
    v_plain = (r + half) * side + (c + 1)
    v_skew = (r - c + 2 * half) * side + (c + 1)
    return torch.cat([t.reshape(-1) for t in (h_plain, v_plain, h_skew, v_skew)])


class MRA(nn.Module):
    """Mid-range attention: a low-resolution gate from long 1-D and diagonal depthwise convs.

    The gate is computed on a 3x smaller map (max-pool, then anti-aliased stride-3 blur),
    normalised, squashed by a sigmoid and upsampled (nearest) back to the input size.
    """

    # The norm follows the sum of the four convs (all read the same map): it folds into them.
    bn_folds = ((("H_att1", "V_att1", "H_att2", "V_att2"), "norm"),)

    def __init__(self, channel: int, att_kernel: int) -> None:
        super().__init__()
        pad = att_kernel // 2
        self.channel = channel
        self.att_kernel = att_kernel
        self.gate_fn = nn.Sigmoid()
        self.max_m1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.max_m2 = BlurPool(channel, filt_size=4, stride=3)
        self.H_att1 = nn.Conv2d(channel, channel, (att_kernel, 3), 1, (pad, 1), groups=channel, bias=False)
        self.V_att1 = nn.Conv2d(channel, channel, (3, att_kernel), 1, (1, pad), groups=channel, bias=False)
        self.H_att2 = nn.Conv2d(channel, channel, (att_kernel, 3), 1, (pad, 1), groups=channel, bias=False)
        self.V_att2 = nn.Conv2d(channel, channel, (3, att_kernel), 1, (1, pad), groups=channel, bias=False)
        self.norm = bn(channel)
        self.register_buffer("tap_positions", mra_tap_positions(att_kernel), persistent=False)

    def fused_conv(self) -> tuple[Tensor, Tensor | None]:
        """The single (k+2) x (k+2) depthwise kernel (and bias) equal to the sum of the four convs.

        Built from the weights the convs compute with now (BatchNorm-folded at inference).
        """
        params = [conv_params(conv) for conv in (self.H_att1, self.V_att1, self.H_att2, self.V_att2)]
        taps = torch.cat([weight.reshape(self.channel, -1) for weight, _ in params], dim=1)
        side = self.att_kernel + 2
        kernel = taps.new_zeros(self.channel, side * side).index_add(1, self.tap_positions, taps)
        biases = [bias for _, bias in params if bias is not None]
        bias = torch.stack(biases).sum(0) if biases else None
        return kernel.reshape(self.channel, 1, side, side), bias

    def forward(self, x: Tensor) -> Tensor:
        small = self.max_m2(self.max_m1(x))
        weight, bias = self.fused_conv()
        att = self.norm(F.conv2d(small, weight, bias, padding=self.att_kernel // 2 + 1, groups=self.channel))
        gate = F.interpolate(torch.sigmoid(att), size=x.shape[-2:], mode="nearest")
        return x[:, : self.channel] * gate


class Edge(nn.Module):
    """Edge prior for stage 0: magnitude of two learnt 3x3 gradient filters, then a conv stack.

    The filters start as Scharr kernels in the original but are re-initialised like every
    other conv, so only the checkpoint's values matter.
    """

    def __init__(self, channel: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.block = _prior_stack(channel, act_layer)
        self.conv_x = nn.Conv2d(channel, channel, 3, padding=1, groups=channel, bias=False)
        self.conv_y = nn.Conv2d(channel, channel, 3, padding=1, groups=channel, bias=False)
        self.norm = bn(channel)
        self.act = act_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        gx = self.conv_x(x)
        gy = self.conv_y(x)
        magnitude = torch.sqrt(gx * gx + gy * gy)
        return self.block(x + self.act(self.norm(magnitude)))


class Gaussian(nn.Module):
    """Smoothing prior for stages 1-3: a learnt 3x3 depthwise filter, then a conv stack."""

    bn_folds = ((("conv_o",), "norm"),)

    def __init__(self, channel: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.block = _prior_stack(channel, act_layer)
        self.conv_o = nn.Conv2d(channel, channel, 3, padding=1, groups=channel, bias=False)
        self.norm = bn(channel)
        self.act = act_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        smooth = self.act(self.norm(self.conv_o(x)))
        return self.block(x + smooth)


def _prior_stack(channel: int, act_layer: ActLayer) -> nn.Sequential:
    """C -> 64 (1x1) -> 256 (3x3) -> 256 (3x3) -> C (1x1), each followed by BN."""
    return nn.Sequential(
        nn.Conv2d(channel, PRIOR_HIDDEN, 1),
        bn(PRIOR_HIDDEN),
        act_layer(inplace=True),
        nn.Conv2d(PRIOR_HIDDEN, PRIOR_WIDE, 3, padding=1, bias=False),
        bn(PRIOR_WIDE),
        act_layer(inplace=True),
        nn.Conv2d(PRIOR_WIDE, PRIOR_WIDE, 3, padding=1, bias=False),
        bn(PRIOR_WIDE),
        act_layer(inplace=True),
        nn.Conv2d(PRIOR_WIDE, channel, 1),
        bn(channel),
    )


def bga_kernel_size(channel: int) -> int:
    """ECA-style adaptive 1-D kernel size over channels (odd), as the original computes it."""
    t = int(abs((math.log(channel, 2) + 1) / 2))
    return t if t % 2 else t + 1


class BGA(nn.Module):
    """Boundary-guided attention: the prior modulates the features, then ECA channel weights."""

    def __init__(self, channel: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.channel = channel
        k = bga_kernel_size(channel)
        # One module under two names: checkpoints hold both key sets.
        self.conv2d = self.block = nn.Sequential(
            nn.Conv2d(channel, channel, 3, stride=1, padding=1, bias=False),
            bn(channel),
            act_layer(inplace=True),
        )
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1d = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()
        self.norm = bn(channel)

    def forward(self, c: Tensor, att: Tensor) -> Tensor:
        att = self.conv2d(c * att + c)
        pooled = att.mean(dim=(-2, -1)).unsqueeze(1)  # (B, 1, C): channels as a 1-D signal
        wei = torch.sigmoid(self.conv1d(pooled)).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)
        return self.norm(c + att * wei)


class Unravel_Block(nn.Module):  # noqa: N801 - the class name is irrelevant to keys but kept for readers
    """One UnravelNet block: four attention quarters, a 1x1 MLP, BN, residual add."""

    # The block's norm directly follows the MLP's last 1x1 conv (drop-path is the identity then).
    bn_folds = ((("mlp.3",), "norm"),)

    def __init__(
        self,
        dim: int,
        stage: int,
        att_kernel: int,
        mlp_ratio: float,
        drop_path: float,
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"block width must be divisible by 4, got {dim}")
        self.stage = stage
        self.dim_split = dim // 4
        self.drop_path = DropPath(drop_path)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            bn(hidden),
            act_layer(),
            nn.Conv2d(hidden, dim, 1, bias=False),
        )
        self.PA = PA(self.dim_split, act_layer)
        self.LA = LA(self.dim_split, act_layer)
        self.MRA = MRA(self.dim_split, att_kernel)
        self.BGA = BGA(self.dim_split, act_layer)
        if stage == 0:
            self.edge = Edge(self.dim_split, act_layer)
        else:
            self.gaussian = Gaussian(self.dim_split, act_layer)
        self.norm = bn(dim)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2, x3, x4 = torch.split(x, self.dim_split, dim=1)
        prior = self.edge(x4) if self.stage == 0 else self.gaussian(x4)
        mixed = torch.cat(
            (x1 + self.PA(x1), self.LA(x2), self.MRA(x3), self.BGA(x4, prior)),
            dim=1,
        )
        return x + self.norm(self.drop_path(self.mlp(mixed)))


class BasicStage(nn.Module):
    """A run of blocks at one resolution."""

    def __init__(
        self,
        dim: int,
        stage: int,
        depth: int,
        att_kernel: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                Unravel_Block(dim, stage, att_kernel, mlp_ratio, drop_path[i], act_layer)
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    """Patchify: a 4x4 stride-4 conv, then BN."""

    def __init__(self, in_chans: int, stem_dim: int, norm: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, stem_dim, kernel_size=4, stride=4, bias=False)
        self.norm = bn(stem_dim) if norm else nn.Identity()
        self.bn_folds = ((("proj",), "norm"),) if norm else ()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class UnravelNet(nn.Module):
    """UnravelNet feature extractor: four feature maps at strides 4, 8, 16 and 32.

    Widths are ``stem_dim * 2**i``. Stages sit at ``stages[0, 2, 4, 6]`` with DRFD
    downsamplers between them; each stage output passes through ``norm{0,2,4,6}``.

    As built, every layer runs in the reference's order; ``load_detector`` folds the BatchNorms
    (:func:`..folding.fold_batchnorms`) and sets ``channels_last`` for inference.
    """

    requires_square = True
    size_multiple = INPUT_MULTIPLE
    min_input_size = MIN_INPUT_SIZE
    # Run CPU inference on channels-last maps (faster with oneDNN; other float32 rounding).
    channels_last = False

    def __init__(
        self,
        stem_dim: int = 32,
        depths: Sequence[int] = (1, 4, 4, 2),
        att_kernel: Sequence[int] = (11, 11, 11, 11),
        mlp_ratio: float = 2.0,
        in_chans: int = 3,
        act_layer: ActLayer = nn.ReLU,
        stem_norm: bool = True,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        depths = tuple(int(d) for d in depths)
        att_kernel = tuple(int(k) for k in att_kernel)
        if len(att_kernel) != len(depths):
            raise ValueError(f"need one att_kernel per stage: depths {depths}, att_kernel {att_kernel}")
        self.stem_dim = stem_dim
        self.depths = depths
        self.att_kernel = att_kernel
        self.mlp_ratio = mlp_ratio
        self.num_stages = len(depths)
        self.out_channels = [stem_dim * 2**i for i in range(self.num_stages)]
        self.out_indices = [2 * i for i in range(self.num_stages)]

        self.Stem = Stem(in_chans, stem_dim, norm=stem_norm)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        layers: list[nn.Module] = []
        for i, width in enumerate(self.out_channels):
            stage_rates = rates[sum(depths[:i]) : sum(depths[: i + 1])]
            layers.append(BasicStage(width, i, depths[i], att_kernel[i], mlp_ratio, stage_rates, act_layer))
            if i < self.num_stages - 1:
                layers.append(DRFD(width, act_layer))
        self.stages = nn.Sequential(*layers)
        for index, width in zip(self.out_indices, self.out_channels):
            self.add_module(f"norm{index}", bn(width))
        self.apply(_init_conv)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        check_square_input(x, self.size_multiple, "UnravelNet")
        if x.shape[-1] < MIN_INPUT_SIZE:
            raise ValueError(
                f"UnravelNet needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got "
                f"{x.shape[-2]}x{x.shape[-1]}; pad the image or use a larger tile"
            )
        x = self.Stem(cpu_channels_last(x, self.channels_last and not self.training))
        outs = []
        for index, layer in enumerate(self.stages):
            x = layer(x)
            if index in self.out_indices:
                outs.append(getattr(self, f"norm{index}")(x))
        return tuple(outs)

    @property
    def info(self) -> dict:
        """Architecture summary for model cards and diagnostics."""
        return {
            "backbone": "UnravelNet",
            "stem_dim": self.stem_dim,
            "depths": list(self.depths),
            "att_kernel": list(self.att_kernel),
            "mlp_ratio": self.mlp_ratio,
            "out_channels": list(self.out_channels),
        }


def _init_conv(module: nn.Module) -> None:
    """The original's from-scratch init: truncated normal (std 0.02) convs, zero biases."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------
# Building from a checkpoint
# ----------------------------------------------------------------------------------------


def matches(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> bool:
    """True when the state_dict holds an UnravelNet backbone under ``prefix``."""
    return f"{prefix}Stem.proj.weight" in state_dict


def _stage_depths(keys: Sequence[str], prefix: str) -> list[int]:
    """Number of blocks in each stage, from the ``stages.{2i}.blocks.{j}`` keys."""
    blocks: dict[int, set[int]] = {}
    head = f"{prefix}stages."
    for key in keys:
        if not key.startswith(head):
            continue
        parts = key[len(head) :].split(".")
        if len(parts) > 2 and parts[1] == "blocks":
            blocks.setdefault(int(parts[0]), set()).add(int(parts[2]))
    indices = sorted(blocks)
    expected = [2 * i for i in range(len(indices))]
    if not indices or indices != expected:
        raise ValueError(
            f"UnravelNet checkpoint: expected stages at {prefix}stages.0, .2, .4, ... but found "
            f"blocks under {indices}; the file is not an UnravelNet checkpoint or is damaged"
        )
    depths = []
    for index in indices:
        found = sorted(blocks[index])
        if found != list(range(len(found))):
            raise ValueError(f"UnravelNet checkpoint: stage {index} has gaps in its block indices {found}")
        depths.append(len(found))
    return depths


def infer_config(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> dict:
    """UnravelNet constructor arguments implied by the tensor shapes of a checkpoint."""
    if not matches(state_dict, prefix):
        raise ValueError(f"no UnravelNet backbone in this state_dict (missing {prefix}Stem.proj.weight)")
    proj = state_dict[f"{prefix}Stem.proj.weight"]
    stem_dim, in_chans = int(proj.shape[0]), int(proj.shape[1])
    depths = _stage_depths(list(state_dict), prefix)
    kernels = []
    for i in range(len(depths)):
        weight = state_dict.get(f"{prefix}stages.{2 * i}.blocks.0.MRA.H_att1.weight")
        if weight is None:
            raise ValueError(f"UnravelNet checkpoint: stage {i} lacks its MRA.H_att1 weight")
        kernels.append(int(weight.shape[2]))
    hidden = int(state_dict[f"{prefix}stages.0.blocks.0.mlp.0.weight"].shape[0])
    mlp_ratio = hidden / stem_dim
    if float(mlp_ratio).is_integer():
        mlp_ratio = float(int(mlp_ratio))
    return {
        "stem_dim": stem_dim,
        "depths": tuple(depths),
        "att_kernel": tuple(kernels),
        "mlp_ratio": mlp_ratio,
        "in_chans": in_chans,
        "stem_norm": f"{prefix}Stem.norm.weight" in state_dict,
    }


def build_from_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> UnravelNet:
    """An UnravelNet whose architecture fits the checkpoint (weights are NOT loaded).

    Every tensor shape under ``prefix`` is checked against the built model, so a checkpoint
    from another variant fails here with a readable list instead of deep inside
    ``load_state_dict``. Load the weights with ``load_state_dict`` afterwards.
    """
    model = UnravelNet(**infer_config(state_dict, prefix))
    expected = model.state_dict()
    problems = []
    for name, tensor in expected.items():
        found = state_dict.get(prefix + name)
        if found is None:
            problems.append(f"missing {prefix}{name}")
        elif tuple(found.shape) != tuple(tensor.shape):
            problems.append(f"{prefix}{name}: shape {tuple(found.shape)}, expected {tuple(tensor.shape)}")
    extra = [k for k in state_dict if k.startswith(prefix) and k[len(prefix) :] not in expected]
    problems += [f"unexpected {k}" for k in extra]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"checkpoint does not fit an UnravelNet built from its shapes: {shown}")
    return model
