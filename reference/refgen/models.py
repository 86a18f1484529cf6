"""Reduced Oriented R-CNN models with reproducible random weights, built by mmrotate itself.

The recipe (each step with its own seed, so one change does not shift the others):

1. ``torch.manual_seed(0)``, then ``mmrotate.models.build_detector`` on the published tiny config
   with the reduced widths of ``REDUCED`` (``init_weights()`` is not called).
2. Every Conv1d/Conv2d/Linear weight of the whole model (fixed-filter convs included) is redrawn
   on a coarse grid: ``round(2 z) / 2 * 2^-e`` with ``z ~ N(0, 1)`` clipped to [-3, 3] and
   ``2^-e`` the power of two nearest to ``1/sqrt(fan_in)``; biases ``round(256 u) / 256`` with
   ``u ~ U[-0.1, 0.1)`` (Generator seeded with 2, ``modules()`` order). Such weights are exact in
   float32 and compress well, which keeps the committed checkpoints small. Layers with more than
   ``SPARSE_ABOVE`` weights (UnravelNet's fixed 256-channel convs, the first RoI FC) then keep
   one weight in ``SPARSE_KEEP`` at random (a second Generator, seeded with 3, so every other
   layer's draw is unchanged), scaled by its square root: same variance, still exact.
3. BN calibration: every BatchNorm is reset, given ``momentum=None`` and switched to train mode
   (all else in eval); one backbone pass over the scene sets its running statistics.
4. BN randomisation (Generator seeded with 1): weight ``U[0.5, 1.5)``, bias ``U[-0.25, 0.25)``,
   running_var floored at 1e-2, running_mean ``+= 0.2 sqrt(var) N(0, 1)``, running_var ``*= U[0.5, 2)``.
5. The RPN and RoI regression layers are scaled so that their deltas have std 0.26 on the scene,
   as in a trained detector (otherwise proposals degenerate).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Tuple

import torch
from torch import nn

from .common import DOTA_CLASSES, config_dir

DELTA_STD = 0.26
SPARSE_ABOVE = 2**18  # weights of a layer above which most are zeroed (see step 2)
SPARSE_KEEP = 16  # one weight in 16 kept, times 4 (a power of two: exact in float32)

# Published configs the reduced models start from (relative to the extracted config folder).
CONFIGS = {
    "unravelnet": "unravelnet/ORCNN_unravelnet_tiny_fpn_le90_dota10val_ss_e36.py",
    "legnet": "legnet/orcnn_legnet_tiny_dota10_test_ss_e36.py",
}
REDUCED = dict(stem_dim=16, depths=(1, 2, 2, 1), fpn_width=64, roi_fc_width=128)
FULL = {"tiny": (32, (1, 4, 4, 2)), "small": (64, (1, 4, 4, 2))}


def load_config(backbone: str, stem_dim: int, depths: Tuple[int, ...], fpn_width: int, roi_fc_width: int,
                drop_path_rate: float = 0.1):
    """The published tiny config with the given widths, BN instead of SyncBN, no pretrained file."""
    from mmcv import Config

    cfg = Config.fromfile(str(config_dir() / CONFIGS[backbone]))
    model = cfg.model
    widths = [stem_dim * 2 ** i for i in range(4)]
    model.backbone.update(stem_dim=stem_dim, depths=tuple(depths), drop_path_rate=drop_path_rate,
                          norm_layer=dict(type="BN", requires_grad=True), init_cfg=None, pretrained=None)
    if backbone == "unravelnet":
        model.backbone.update(att_kernel=(11, 11, 11, 11))
    model.neck.update(in_channels=widths, out_channels=fpn_width)
    model.rpn_head.update(in_channels=fpn_width, feat_channels=fpn_width)
    model.roi_head.bbox_roi_extractor.update(out_channels=fpn_width)
    model.roi_head.bbox_head.update(in_channels=fpn_width, fc_out_channels=roi_fc_width, num_classes=15)
    return cfg


def build(cfg) -> nn.Module:
    import ref_backbones  # noqa: F401  (registers UnravelNet and LWEGNet)
    from mmrotate.models import build_detector

    torch.manual_seed(0)
    return build_detector(copy.deepcopy(cfg.model))


def grid_weights(model: nn.Module, seed: int = 2, sparse_seed: int = 3) -> int:
    """Step 2: redraw every conv and linear layer on the coarse grid; returns how many.

    The largest layers are made sparse: a checkpoint's size grows with the entropy of its
    weights, and UnravelNet's fixed 256-channel convs would otherwise be most of the golden
    folder. A sparse layer still computes every product, so parity is tested the same way."""
    gen = torch.Generator().manual_seed(seed)
    sparse_gen = torch.Generator().manual_seed(sparse_seed)
    count = 0
    for module in model.modules():
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        w = module.weight
        fan_in = w[0].numel()
        scale = 2.0 ** round(math.log2(1.0 / math.sqrt(fan_in)))
        z = torch.randn(w.shape, generator=gen).clamp_(-3, 3)
        values = torch.round(z * 2) / 2 * scale
        if w.numel() > SPARSE_ABOVE:
            keep = torch.rand(w.shape, generator=sparse_gen) < 1.0 / SPARSE_KEEP
            values = torch.where(keep, values * math.sqrt(SPARSE_KEEP), torch.zeros(()))  # +0.0, not -0.0
        with torch.no_grad():
            w.copy_(values)
            if module.bias is not None:
                u = torch.rand(module.bias.shape, generator=gen) * 0.2 - 0.1
                module.bias.copy_(torch.round(u * 256) / 256)
        count += 1
    return count


def batch_norms(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def calibrate_bn(model: nn.Module, image: torch.Tensor) -> int:
    """Step 3: running statistics of one backbone pass (unbiased variance)."""
    model.eval()
    norms = batch_norms(model)
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    model.backbone(image)
    for bn in norms:
        bn.eval()
        bn.momentum = 0.1
    return len(norms)


@torch.no_grad()
def randomise_bn(model: nn.Module, seed: int = 1, var_floor: float = 1e-2) -> int:
    """Step 4; returns how many channels needed the variance floor."""
    gen = torch.Generator().manual_seed(seed)
    floored = 0
    for bn in batch_norms(model):
        n = bn.num_features
        bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        bn.bias.copy_(torch.rand(n, generator=gen) * 0.5 - 0.25)
        floored += int((bn.running_var < var_floor).sum())
        bn.running_var.clamp_(min=var_floor)
        bn.running_mean.add_(0.2 * bn.running_var.sqrt() * torch.randn(n, generator=gen))
        bn.running_var.mul_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return floored


@torch.no_grad()
def scale_regressors(model: nn.Module, image: torch.Tensor, metas) -> Dict[str, float]:
    """Step 5: RPN and RoI deltas get std DELTA_STD on the scene."""
    from mmrotate.core import rbbox2roi

    model.eval()
    feats = model.extract_feat(image)
    _, deltas = model.rpn_head(feats)
    rpn_std = float(torch.cat([d.flatten() for d in deltas]).std())
    rpn_scale = DELTA_STD / rpn_std
    model.rpn_head.rpn_reg.weight.mul_(rpn_scale)
    model.rpn_head.rpn_reg.bias.mul_(rpn_scale)
    proposals = model.rpn_head.simple_test_rpn(feats, metas)
    rois = rbbox2roi(proposals)
    _, bbox_pred = model.roi_head.bbox_head(model.roi_head.bbox_roi_extractor(
        feats[: model.roi_head.bbox_roi_extractor.num_inputs], rois))
    roi_scale = DELTA_STD / float(bbox_pred.std())
    model.roi_head.bbox_head.fc_reg.weight.mul_(roi_scale)
    model.roi_head.bbox_head.fc_reg.bias.mul_(roi_scale)
    return {"rpn_reg_scale": rpn_scale, "roi_reg_scale": roi_scale}


def reduced_model(backbone: str, image: torch.Tensor, metas) -> Tuple[nn.Module, Any, Dict[str, Any]]:
    """(model in eval mode, config, facts about the recipe) for ``backbone`` on ``image``."""
    cfg = load_config(backbone, **REDUCED)
    model = build(cfg)
    facts: Dict[str, Any] = {"grid_layers": grid_weights(model)}
    facts["bn_layers"] = calibrate_bn(model, image)
    facts["bn_channels_floored"] = randomise_bn(model)
    facts.update(scale_regressors(model, image, metas))
    model.eval()
    return model, cfg, facts


def checkpoint_meta(cfg, note: str) -> Dict[str, Any]:
    import mmcv

    return {"CLASSES": list(DOTA_CLASSES), "config": cfg.pretty_text, "note": note,
            "mmcv_version": mmcv.__version__}


def full_state_dict(backbone: str, variant: str) -> Dict[str, torch.Tensor]:
    """state_dict of a published-size model (tiny or small), for the key lists."""
    stem, depths = FULL[variant]
    cfg = load_config(backbone, stem, depths, 256, 1024)
    return build(cfg).state_dict()
