"""ResNet with mmdet 2.x key names (``style='pytorch'``): the backbone of Refined-Det.

mmdet's ResNet and torchvision's share their parameter names (``conv1``, ``bn1``,
``layer{1..4}.{j}.conv{1,2,3}``, ``downsample.{0,1}``) and their stride placement (on the
3x3 conv), so mmrotate checkpoints and torchvision's ImageNet files both load unchanged.
Depth and widths are read from the keys; ``base_channels`` other than 64 (as in reduced test
models) are supported.

Training follows the Refined-Det configs: ``frozen_stages=1`` (stem and layer1 fixed) and
``norm_eval=True`` (BatchNorms keep their ImageNet statistics).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from torch import Tensor, nn

from .common import bn

#: Blocks per stage for each depth, and whether the blocks are bottlenecks.
ARCH: Dict[int, Tuple[bool, Tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
    expansion = 1
    bn_folds = ((("conv1",), "bn1"), (("conv2",), "bn2"))  # folded for inference (detector.folding)

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, stride)
        self.bn1 = bn(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4
    bn_folds = ((("conv1",), "bn1"), (("conv2",), "bn2"), (("conv3",), "bn3"))

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 1)
        self.bn1 = bn(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = bn(planes)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(_conv(inplanes, outplanes, 1, stride), bn(outplanes))


class ResNet(nn.Module):
    """Stem + four stages; ``forward`` returns the four stage outputs (strides 4 to 32)."""

    bn_folds = ((("conv1",), "bn1"),)

    def __init__(
        self, depth: int = 50, base_channels: int = 64, frozen_stages: int = -1, norm_eval: bool = False
    ) -> None:
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"ResNet depth {depth} is not one of {sorted(ARCH)}")
        bottleneck, blocks = ARCH[depth]
        block = Bottleneck if bottleneck else BasicBlock
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.conv1 = nn.Conv2d(3, base_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = bn(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = base_channels
        self.out_channels: List[int] = []
        for i, count in enumerate(blocks):
            planes = base_channels * 2**i
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(count):
                layers.append(block(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            self.out_channels.append(inplanes)
        self.info = {"type": "ResNet", "depth": depth, "base_channels": base_channels}
        self._freeze()

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return outs

    def _freeze(self) -> None:
        """Stop gradients of the stem and the first ``frozen_stages`` stages (mmdet's rule)."""
        parts: List[nn.Module] = []
        if self.frozen_stages >= 0:
            parts += [self.conv1, self.bn1]
        parts += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        for part in parts:
            part.eval()
            for p in part.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> ResNet:
        """Train mode that keeps frozen parts, and with ``norm_eval`` every BatchNorm, in eval."""
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


def matches(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> bool:
    """True when the state dict holds a ResNet under ``prefix``."""
    return f"{prefix}conv1.weight" in state_dict and f"{prefix}layer1.0.conv1.weight" in state_dict


def infer_config(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> Dict[str, int]:
    """Depth and base width from the keys: block counts per stage and conv3's presence."""
    counts = []
    for i in range(1, 5):
        head = f"{prefix}layer{i}."
        blocks = {int(k[len(head) :].split(".")[0]) for k in state_dict if k.startswith(head)}
        counts.append(max(blocks) + 1 if blocks else 0)
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    depths = [d for d, layout in ARCH.items() if layout == (bottleneck, tuple(counts))]
    if not depths:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(f"ResNet with {kind} blocks {counts} per stage is none of depths {sorted(ARCH)}")
    return {"depth": depths[0], "base_channels": int(state_dict[f"{prefix}conv1.weight"].shape[0])}


def build_from_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> ResNet:
    """A ResNet sized from the checkpoint (weights are NOT loaded)."""
    return ResNet(**infer_config(state_dict, prefix))


def imagenet_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """torchvision ImageNet weights without the classifier, ready for ``ResNet.load_state_dict``."""
    return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
