"""UnravelNet backbone: checkpoint layout, golden parity with mmrotate, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qgis_unravel.detector.backbones import common, unravelnet
from qgis_unravel.detector.backbones.unravelnet import MRA, UnravelNet, build_from_state_dict, matches
from qgis_unravel.detector.folding import FoldedBatchNorm2d, fold_batchnorms, is_folded
from qgis_unravel.detector.state_dict import strip_prefix

PARAMS = {"tiny": (32, 9_679_161), "small": (64, 13_986_581)}


def read_key_list(path, prefix):
    """(name without prefix, shape) for every line of a golden key list under ``prefix``."""
    rows = []
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        if key.startswith(prefix):
            dims = shape.strip("[]")
            rows.append((key[len(prefix) :], tuple(int(d) for d in dims.split(",")) if dims else ()))
    return rows


@pytest.fixture(scope="module")
def reduced_backbone(reduced_golden):
    state_dict, _ = reduced_golden
    model = build_from_state_dict(state_dict)
    model.load_state_dict({k[9:]: v for k, v in state_dict.items() if k.startswith("backbone.")}, strict=True)
    return model.eval()


@pytest.mark.parametrize("variant", ["tiny", "small"])
def test_full_size_keys_shapes_and_order_match_mmrotate(golden_dir, variant):
    stem_dim, n_params = PARAMS[variant]
    model = UnravelNet(stem_dim=stem_dim, depths=(1, 4, 4, 2), att_kernel=(11, 11, 11, 11))
    expected = read_key_list(golden_dir / f"state_dict_keys_{variant}.txt", "backbone.")
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert model.out_channels == [stem_dim, 2 * stem_dim, 4 * stem_dim, 8 * stem_dim]


def test_bga_aliases_share_one_module():
    block = UnravelNet(stem_dim=16, depths=(1, 1, 1, 1)).stages[0].blocks[0]
    assert block.BGA.conv2d is block.BGA.block


def test_blurpool_filter_is_the_binomial_4x4():
    filt = common.BlurPool(3, filt_size=4, stride=3).filt
    row = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert filt.shape == (3, 1, 4, 4)
    torch.testing.assert_close(filt[1, 0], torch.outer(row, row) / 64)


def test_blurpool_pads_by_reflection_1_before_2_after():
    pool = common.BlurPool(1, filt_size=4, stride=3)
    x = torch.arange(49.0).reshape(1, 1, 7, 7)
    # Reflect-padded 10x10 map, 4x4 windows at rows/cols 0, 3, 6.
    padded = F.pad(x, (1, 2, 1, 2), mode="reflect")[0, 0]
    windows = [[(padded[i : i + 4, j : j + 4] * pool.filt[0, 0]).sum() for j in (0, 3, 6)] for i in (0, 3, 6)]
    expected = torch.tensor(windows)
    torch.testing.assert_close(pool(x)[0, 0], expected)


def test_build_from_state_dict_infers_the_reduced_config(reduced_golden):
    state_dict, _ = reduced_golden
    assert matches(state_dict)
    assert not matches({"neck.lateral_convs.0.conv.weight": torch.zeros(1)})
    config = unravelnet.infer_config(state_dict)
    assert config["stem_dim"] == 16
    assert config["depths"] == (1, 2, 2, 1)
    assert config["att_kernel"] == (11, 11, 11, 11)
    assert config["mlp_ratio"] == 2.0


def test_build_from_state_dict_reads_any_prefix(reduced_golden):
    state_dict, _ = reduced_golden
    bare = strip_prefix(state_dict, "backbone.")
    model = build_from_state_dict(bare, prefix="")
    model.load_state_dict(bare, strict=True)


def test_build_from_state_dict_reports_a_shape_mismatch(reduced_golden):
    state_dict, _ = reduced_golden
    damaged = dict(state_dict)
    damaged["backbone.stages.0.blocks.0.edge.block.3.weight"] = torch.zeros(256, 32, 3, 3)
    damaged["backbone.stages.0.blocks.0.PA.p_conv.1.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="edge.block.3.weight.*shape.*unexpected"):
        build_from_state_dict(damaged)


def test_build_from_state_dict_rejects_other_checkpoints():
    with pytest.raises(ValueError, match="no UnravelNet backbone"):
        build_from_state_dict({"backbone.patch_embed.weight": torch.zeros(1)})


def test_reduced_model_matches_mmrotate_outputs(reduced_golden, reduced_backbone):
    _, io = reduced_golden
    with torch.inference_mode():
        outs = reduced_backbone(torch.from_numpy(io["input"])[None])
    assert len(outs) == 4
    for i, out in enumerate(outs):
        ref = torch.from_numpy(io[f"backbone_out{i}"])
        assert out.shape[1:] == ref.shape
        torch.testing.assert_close(out[0], ref, atol=1e-4, rtol=1e-4)


@pytest.fixture()
def folded_backbone(reduced_golden):
    state_dict, _ = reduced_golden
    model = build_from_state_dict(state_dict)
    model.load_state_dict({k[9:]: v for k, v in state_dict.items() if k.startswith("backbone.")}, strict=True)
    fold_batchnorms(model.eval())
    return model


def test_folded_model_still_matches_mmrotate(reduced_golden, folded_backbone):
    """Folding every conv+BN pair once: same function, other rounding."""
    _, io = reduced_golden
    folded = [m for m in folded_backbone.modules() if isinstance(m, FoldedBatchNorm2d)]
    assert len(folded) > 50  # the folding really covers the network
    # Every declared pair of the block (MRA's four convs, the MLP's last conv) is among them.
    block = folded_backbone.stages[0].blocks[0]
    assert isinstance(block.MRA.norm, FoldedBatchNorm2d) and isinstance(block.norm, FoldedBatchNorm2d)
    assert isinstance(folded_backbone.Stem.norm, FoldedBatchNorm2d)
    with torch.inference_mode():
        outs = folded_backbone(torch.from_numpy(io["input"])[None])
    for i, out in enumerate(outs):
        torch.testing.assert_close(out[0], torch.from_numpy(io[f"backbone_out{i}"]), atol=1e-4, rtol=1e-4)


def test_channels_last_option_matches_mmrotate_loosely(reduced_golden, folded_backbone):
    """Channels-last (set for inference by load_detector) reorders rounding more: 2e-4 here."""
    _, io = reduced_golden
    folded_backbone.channels_last = True
    with torch.inference_mode():
        outs = folded_backbone(torch.from_numpy(io["input"])[None])
    assert outs[0].is_contiguous(memory_format=torch.channels_last)
    for i, out in enumerate(outs):
        torch.testing.assert_close(out[0], torch.from_numpy(io[f"backbone_out{i}"]), atol=2e-4, rtol=2e-4)


def test_a_built_model_is_not_folded(reduced_backbone):
    assert not is_folded(reduced_backbone)
    assert reduced_backbone.channels_last is False


def _skew_rows(x):
    """Shift row i right by i into a (H, 2W-1) map, zero elsewhere (the original's layout)."""
    height, width = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-1], 2 * width - 1)
    for i in range(height):
        out[..., i, i : i + width] = x[..., i, :]
    return out


def _unskew_rows(y, width):
    """Inverse of ``_skew_rows``: read row i from column i onwards."""
    return torch.stack([y[..., i, i : i + width] for i in range(y.shape[-2])], dim=-2)


def _literal_mra_logits(mra, small):
    """The four MRA convs as the original writes them, skewing explicitly."""
    side = small.shape[-1]
    h_skew = _unskew_rows(mra.H_att2(_skew_rows(small)), side)
    # Columns skewed the same way: transpose, skew rows, transpose back, then the (3, k) conv.
    v_skewed = _skew_rows(small.transpose(-1, -2)).transpose(-1, -2)
    v_conv = mra.V_att2(v_skewed)
    v_skew = _unskew_rows(v_conv.transpose(-1, -2), side).transpose(-1, -2)
    return mra.H_att1(small) + mra.V_att1(small) + h_skew + v_skew


@pytest.mark.parametrize("kernel,side", [(11, 22), (11, 3), (5, 9), (3, 1)])
def test_fused_mra_kernel_equals_the_skewed_convs(kernel, side):
    torch.manual_seed(kernel + side)
    mra = MRA(4, kernel)
    for conv in (mra.H_att1, mra.V_att1, mra.H_att2, mra.V_att2):
        torch.nn.init.normal_(conv.weight)
    small = torch.randn(2, 4, side, side)
    kernel_weight, bias = mra.fused_conv()
    assert bias is None  # the four convs have none
    fused = F.conv2d(small, kernel_weight, padding=kernel // 2 + 1, groups=4)
    torch.testing.assert_close(fused, _literal_mra_logits(mra, small), atol=1e-5, rtol=1e-5)


def test_mra_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        MRA(4, 10)


def test_training_mode_uses_batch_statistics_and_backpropagates():
    torch.manual_seed(0)
    model = UnravelNet(stem_dim=8, depths=(1, 1, 1, 1), drop_path_rate=0.0)
    fold_batchnorms(model.eval())  # as load_detector leaves it: training must not see the folding
    model.train()
    x = torch.randn(2, 3, 96, 96)
    outs = model(x)
    # norm0 in training mode normalises by batch statistics: per-channel mean ~ bias (0).
    assert outs[0].mean(dim=(0, 2, 3)).abs().max() < 1e-4
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.stages[0].blocks[0].MRA.H_att2.weight.grad.abs().sum() > 0


def test_eval_output_shapes_and_strides():
    model = UnravelNet(stem_dim=8, depths=(1, 1, 1, 1)).eval()
    with torch.inference_mode():
        outs = model(torch.randn(1, 3, 96, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 24, 24), (1, 16, 12, 12), (1, 32, 6, 6), (1, 64, 3, 3)]
    assert model.requires_square is True


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 64, 96), "square"),
        ((1, 3, 112, 112), "multiple of 32"),
        ((1, 3, 64, 64), "at least 96x96"),
        ((3, 96, 96), r"\(B, C, H, W\)"),
    ],
)
def test_bad_input_sizes_raise_clear_errors(shape, message):
    model = UnravelNet(stem_dim=8, depths=(1, 1, 1, 1)).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))
