"""BatchNorm folding (detector/folding.py): once at load, same function, never seen by training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qgis_unravel.detector import folding
from qgis_unravel.detector.folding import FoldedBatchNorm2d, FoldedConv2d, fold_batchnorms, is_folded


class Toy(nn.Module):
    """The three shapes of pair the backbones have: in a Sequential, named, and a sum of convs."""

    bn_folds = ((("proj",), "norm"), (("left", "right"), "sum_norm"))

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.proj = nn.Conv2d(6, 4, 1, bias=False)
        self.norm = nn.BatchNorm2d(4)
        self.left = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.right = nn.Conv2d(4, 4, (1, 3), padding=(0, 1), groups=4)
        self.sum_norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.proj(self.seq(x)))
        w_left, b_left = folding.conv_params(self.left)
        w_right, b_right = folding.conv_params(self.right)
        summed = nn.functional.conv2d(y, w_left, b_left, padding=1, groups=4) + nn.functional.conv2d(
            y, w_right, b_right, padding=(0, 1), groups=4
        )
        return self.sum_norm(summed)


def toy(seed: int = 0) -> Toy:
    """A Toy with non-trivial BatchNorm statistics (fresh ones would fold to the identity)."""
    torch.manual_seed(seed)
    model = Toy()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.3, 3)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -1, 1)
    return model.eval()


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_folding_keeps_the_function_and_every_checkpoint_tensor(x):
    model = toy()
    expected = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fold_batchnorms(model) == 3
    assert is_folded(model) and isinstance(model.seq[0], FoldedConv2d)
    assert model.seq[2].inplace  # the ReLU after the pair writes the conv's fresh map in place
    assert isinstance(model.norm, FoldedBatchNorm2d) and isinstance(model.sum_norm, FoldedBatchNorm2d)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    after = model.state_dict()
    assert list(after) == list(before)  # same keys, same order: saving writes the checkpoint
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert fold_batchnorms(model) == 0  # idempotent
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_folded_tensors_are_computed_once(x, monkeypatch):
    model = toy()
    fold_batchnorms(model)
    calls = []
    real = folding._Fold._folded_params
    monkeypatch.setattr(folding._Fold, "_folded_params", lambda self: calls.append(1) or real(self))
    with torch.inference_mode():
        model(x)
        model(x)
    assert calls == []


def test_training_never_sees_folded_weights(x):
    plain, folded = toy(), toy()
    fold_batchnorms(folded)
    plain.train()
    folded.train()
    assert torch.equal(folded(x), plain(x))  # batch statistics, original weights
    # One optimiser step on both; back in eval mode the folded pairs follow the new weights.
    for model in (plain, folded):
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x).square().mean().backward()
        assert model.proj.weight.grad is not None and model.left.weight.grad.abs().sum() > 0
        optimiser.step()
    assert torch.equal(folded.state_dict()["norm.running_mean"], plain.state_dict()["norm.running_mean"])
    plain.eval()
    folded.eval()
    torch.testing.assert_close(folded(x), plain(x), atol=1e-5, rtol=1e-5)


def test_a_norm_kept_in_eval_while_training_is_applied_unfolded(x):
    """ResNet's ``norm_eval``: convs train, norms use running statistics; no folding then."""
    plain, folded = toy(), toy()
    fold_batchnorms(folded)
    for model in (plain, folded):
        model.train()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    assert torch.equal(folded(x), plain(x))


def test_loading_other_weights_or_a_dtype_move_refolds(x):
    model, other = toy(0), toy(1)
    fold_batchnorms(model)
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(model(x), other(x), atol=1e-5, rtol=1e-5)
    model.double()
    assert model.seq[0].bn_folded_weight.dtype == torch.float64
    torch.testing.assert_close(model(x.double()), other.double()(x.double()), atol=1e-9, rtol=1e-9)


def test_a_deep_copy_stays_folded_and_correct(x):
    model = toy()
    expected = model(x)
    fold_batchnorms(model)
    twin = copy.deepcopy(model)
    assert twin.seq[0]._bn_fold.norm is twin.seq[1]  # the copy's pair, not the original's
    torch.testing.assert_close(twin(x), expected, atol=1e-5, rtol=1e-5)


def test_pairs_that_cannot_fold_are_refused():
    class Bad(nn.Module):
        bn_folds = ((("conv",), "norm"),)

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(3, 3, 1)
            self.norm = nn.BatchNorm2d(3)

    with pytest.raises(TypeError, match="Conv1d"):
        fold_batchnorms(Bad())


def test_resnet_of_refined_det_folds_too():
    from qgis_unravel.training.model import REFINED_DET_PRESETS, build_refined_det

    torch.manual_seed(0)
    model = build_refined_det(REFINED_DET_PRESETS["pico"], ["a", "b"]).eval()
    for module in model.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    batch = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model.extract_feat(batch)
        assert fold_batchnorms(model) > 0
        assert all(not isinstance(m, nn.BatchNorm2d) or isinstance(m, FoldedBatchNorm2d)
                   for m in model.backbone.modules())
        for got, want in zip(model.extract_feat(batch), expected):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_load_detector_folds_and_build_detector_does_not(golden_dir):
    from qgis_unravel.detector.checkpoint import build_detector, load_detector, read_checkpoint

    path = golden_dir / "legnet" / "legnet_reduced_model.pth"
    loaded = load_detector(path)
    assert is_folded(loaded) and loaded.backbone.channels_last
    assert not is_folded(load_detector(path, fast=False))
    assert not is_folded(build_detector(*read_checkpoint(path)))
