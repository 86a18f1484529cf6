"""LEGNet backbone: checkpoint layout, numerical parity with mmrotate, autocast safety.

Golden data: tests/golden/legnet (see docs/golden.md). The reduced model (stem 16, depths
1/2/2/1) runs a 256x256 forward in a fraction of a second; full-size models are only built,
never run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from qgis_unravel.detector.backbones.legnet import (
    LEGNet,
    build_from_state_dict,
    lfea_kernel_size,
    matches,
    remap_legacy_keys,
)
from qgis_unravel.detector.config import Thresholds
from qgis_unravel.detector.folding import FoldedBatchNorm2d, prepare_for_inference

# Features: the legnet README's cross-version check (torch 2.0.1 vs 2.13) gives max |diff|
# 8.8e-5 at backbone_out3 (max |ref| 28); this is the tolerance it calls honest.
FEAT_ATOL = 1e-4
FEAT_RTOL = 1e-4


@pytest.fixture(scope="module")
def legnet_dir(golden_dir: Path) -> Path:
    return golden_dir / "legnet"


@pytest.fixture(scope="module")
def reduced_state_dict(legnet_dir: Path) -> dict:
    ckpt = torch.load(legnet_dir / "legnet_reduced_model.pth", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


@pytest.fixture(scope="module")
def reduced_io(legnet_dir: Path) -> dict:
    with np.load(legnet_dir / "legnet_reduced_model_io.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def reduced_model(reduced_state_dict: dict) -> LEGNet:
    return build_from_state_dict(reduced_state_dict)


@pytest.fixture(scope="module")
def golden_input(reduced_io: dict) -> torch.Tensor:
    return torch.from_numpy(reduced_io["input"])[None]


@pytest.fixture(scope="module")
def small_input(golden_input: torch.Tensor) -> torch.Tensor:
    """A 128x128 crop of the golden image, for checks that compare the port with itself."""
    return golden_input[..., 64:192, 32:160].contiguous()


@pytest.fixture
def single_thread():
    """Tiny train-mode tensors: thread hand-offs would cost more than the arithmetic."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _read_key_list(path: Path) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, json.loads(shape), dtype))
    return rows


def _backbone_rows(path: Path) -> list[tuple[str, list[int], str]]:
    return [(k[len("backbone.") :], s, d) for k, s, d in _read_key_list(path) if k.startswith("backbone.")]


# ------------------------------------------------------------------ layout of full-size models


@pytest.mark.parametrize(
    ("variant", "stem_dim", "params"),
    [("tiny", 32, 3_655_029), ("small", 64, 12_776_389)],
)
def test_full_size_state_dict_matches_official_key_list(legnet_dir, variant, stem_dim, params):
    expected = _backbone_rows(legnet_dir / f"state_dict_keys_legnet_{variant}.txt")
    model = LEGNet(stem_dim, (1, 4, 4, 2))
    got = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    assert got == expected  # names, order, shapes and dtypes
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.out_channels == [stem_dim, 2 * stem_dim, 4 * stem_dim, 8 * stem_dim]
    assert model.requires_square is False


def test_lfea_aliases_are_one_module():
    model = LEGNet(32, (1, 1, 1, 1))
    for block in model.modules():
        if hasattr(block, "LFEA"):
            assert block.LFEA.conv2d is block.LFEA.block


def test_lfea_kernel_rule_matches_checkpoint_shapes(legnet_dir):
    rows = _backbone_rows(legnet_dir / "state_dict_keys_legnet_small.txt")
    for key, shape, _ in rows:
        m = re.match(r"stages\.(\d)\.blocks\.\d+\.LFEA\.conv1d\.weight", key)
        if m:
            assert shape[-1] == lfea_kernel_size(64 * 2 ** (int(m.group(1)) // 2))


def test_build_from_state_dict_infers_full_size_tiny(legnet_dir):
    rows = _read_key_list(legnet_dir / "state_dict_keys_legnet_tiny.txt")
    sd = {k: torch.zeros(s, dtype=getattr(torch, d)) for k, s, d in rows}
    assert matches(sd)
    model = build_from_state_dict(sd)
    assert (model.stem_dim, model.depths) == (32, [1, 4, 4, 2])
    assert model.lfea_kernel_sizes == [3, 3, 5, 5]
    assert model.mlp_ratio == 2.0
    assert not model.training
    assert model.info["backbone"] == "LEGNet"
    assert model.info["out_channels"] == [32, 64, 128, 256]


def test_build_from_meta_tensors_is_shape_only(legnet_dir):
    # The detector builds architectures from shapes alone (tensors on the meta device).
    rows = _read_key_list(legnet_dir / "state_dict_keys_legnet_small.txt")
    sd = {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d in rows}
    model = build_from_state_dict(sd)
    assert (model.stem_dim, model.depths, model.lfea_kernel_sizes) == (64, [1, 4, 4, 2], [3, 5, 5, 5])
    assert not any(p.is_meta for p in model.parameters())


# ------------------------------------------------------------------ parity with mmrotate


def test_reduced_model_architecture_inferred(reduced_model):
    assert reduced_model.stem_dim == 16
    assert reduced_model.depths == [1, 2, 2, 1]
    assert reduced_model.lfea_kernel_sizes == [3, 3, 3, 5]
    assert sum(p.numel() for p in reduced_model.parameters()) == 725_752


@pytest.mark.parametrize("fast", [False, True], ids=["exact", "fast"])
def test_backbone_outputs_match_mmrotate(reduced_state_dict, golden_input, reduced_io, fast):
    model = build_from_state_dict(reduced_state_dict)
    if fast:
        prepare_for_inference(model)  # folded and channels-last, as load_detector leaves it
    with torch.inference_mode():
        outs = model(golden_input)
    assert len(outs) == 4
    for i, out in enumerate(outs):
        ref = torch.from_numpy(reduced_io[f"backbone_out{i}"])
        assert out.shape[1:] == ref.shape
        assert out.shape[-1] * 2 ** (i + 2) == golden_input.shape[-1]  # strides 4, 8, 16, 32
        diff = (out[0] - ref).abs()
        assert torch.allclose(out[0], ref, atol=FEAT_ATOL, rtol=FEAT_RTOL), (
            f"backbone_out{i}: max |diff| {diff.max():.3g}, max |ref| {ref.abs().max():.3g}"
        )


def test_fixed_filters_come_from_the_checkpoint(reduced_model, reduced_state_dict):
    # The golden model's LoG/Gaussian/Scharr weights are random: a port that rebuilt the
    # constants would differ here (and fail the parity test above).
    names = (
        "Stem.LoG.LoG.weight",
        "Stem.gaussian.gaussian.weight",
        "stages.0.blocks.0.Scharr_edge.conv_x.weight",
    )
    for name in names:
        loaded = reduced_model.state_dict()[name]
        assert torch.equal(loaded, reduced_state_dict[f"backbone.{name}"])


def test_fast_mode_is_the_same_function(reduced_state_dict, small_input):
    exact = build_from_state_dict(reduced_state_dict)
    fast = prepare_for_inference(build_from_state_dict(reduced_state_dict))
    folded = [m for m in fast.modules() if isinstance(m, FoldedBatchNorm2d)]
    # Every conv-followed norm of the reduced model (depths 1, 2, 2, 1): per block 3 in the
    # bottleneck, 1 in LFEA, 2 in the MLP (+1 Gaussian branch after stage 1) = 41; one Gaussian
    # branch per DRFD = 3; the stem's Conv_D, Gaussian branch, its bottleneck and DRFD = 6.
    assert len(folded) == 50
    assert isinstance(fast.stages[0].blocks[0].norm, FoldedBatchNorm2d)
    with torch.inference_mode():
        for a, b in zip(exact(small_input), fast(small_input)):
            assert b.is_contiguous(memory_format=torch.channels_last)
            # Rounding only, but it compounds through the network like a torch-version change.
            assert torch.allclose(a, b, atol=FEAT_ATOL, rtol=FEAT_RTOL)
    # Training runs unfolded: folding needs running statistics.
    fast.train()
    exact.train()
    torch.manual_seed(0)
    a = exact(small_input)
    torch.manual_seed(0)
    b = fast(small_input)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_non_square_input_works(reduced_model):
    with torch.inference_mode():
        outs = reduced_model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]


# ------------------------------------------------------------------ autocast / float32 stem


def _realistic_log_scale(state_dict: dict) -> dict:
    """Scale the LoG taps to a trained checkpoint's magnitude (~8.5e6) without changing the function.

    norm1 sees the LoG output, so its mean scales with s and its variance with s^2.
    """
    sd = dict(state_dict)
    w = sd["backbone.Stem.LoG.LoG.weight"]
    s = 8.54e6 / w.abs().max()
    sd["backbone.Stem.LoG.LoG.weight"] = w * s
    sd["backbone.Stem.LoG.norm1.running_mean"] = sd["backbone.Stem.LoG.norm1.running_mean"] * s
    sd["backbone.Stem.LoG.norm1.running_var"] = sd["backbone.Stem.LoG.norm1.running_var"] * s * s
    return sd


@pytest.fixture(scope="module")
def realistic_model(reduced_state_dict) -> LEGNet:
    return build_from_state_dict(_realistic_log_scale(reduced_state_dict))


def test_float32_modules_name_real_submodules(reduced_model):
    assert "Stem.LoG" in LEGNet.float32_modules
    for name in LEGNet.float32_modules:
        reduced_model.get_submodule(name)


def test_log_stem_ignores_autocast(realistic_model, small_input):
    log = realistic_model.Stem.LoG
    with torch.inference_mode():
        plain = log(small_input)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = log(small_input)
    assert cast.dtype == torch.float32
    assert torch.equal(cast, plain)


def test_float16_would_overflow_without_the_float32_stem(realistic_model, small_input):
    # Control for the test below: the LoG taps of a trained checkpoint overflow float16.
    log = realistic_model.Stem.LoG
    with torch.inference_mode():
        x = log.conv_init(small_input)
        edge = torch.nn.functional.conv2d(x.half(), log.LoG.weight.half(), padding=3, groups=log.LoG.groups)
    assert not torch.isfinite(edge).all()


@pytest.mark.parametrize(("dtype", "max_rel"), [(torch.bfloat16, 0.25), (torch.float16, 0.05)])
def test_outputs_finite_under_cpu_autocast(realistic_model, small_input, dtype, max_rel):
    with torch.inference_mode():
        ref = realistic_model(small_input)
        try:
            with torch.autocast("cpu", dtype=dtype):
                outs = realistic_model(small_input)
        except RuntimeError as exc:  # pragma: no cover - depends on the CPU build
            pytest.skip(f"CPU autocast with {dtype} unavailable: {exc}")
    for out, r in zip(outs, ref):
        assert torch.isfinite(out).all()
        rel = ((out.float() - r).abs().max() / r.abs().max()).item()
        assert rel < max_rel


def test_realistic_scale_keeps_float32_parity(realistic_model, golden_input, reduced_io):
    # Scaling the taps by ~2e7 changes float32 rounding in the near-cancelling LoG sum, so the
    # comparison here is relative to each output's range (README: use relative tolerances).
    with torch.inference_mode():
        outs = realistic_model(golden_input)
    for i, out in enumerate(outs):
        ref = torch.from_numpy(reduced_io[f"backbone_out{i}"])
        assert (out[0] - ref).abs().max() / ref.abs().max() < 2e-3


def test_log_stem_batch_norm_trains_like_torch(single_thread):
    # The float32 LoG stem calls batch_norm directly; in train mode it must update running
    # statistics exactly as nn.BatchNorm2d does (and give the same output).
    torch.manual_seed(0)
    model = LEGNet(8, (1, 1, 1, 1)).train()
    log = model.Stem.LoG
    plain = [torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)]
    for bn_plain, bn_port in zip(plain, (log.norm1, log.norm2)):
        bn_plain.load_state_dict(bn_port.state_dict())
        bn_plain.train()
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):
        h = log.conv_init(x)
        expected = plain[1](h + torch.relu(plain[0](log.LoG(h))))
        got = log(x)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    for bn_plain, bn_port in zip(plain, (log.norm1, log.norm2)):
        for name, value in bn_plain.state_dict().items():
            assert torch.allclose(bn_port.state_dict()[name], value, atol=1e-6, rtol=1e-5), name


def test_training_step_gives_finite_gradients(single_thread):
    torch.manual_seed(0)
    model = LEGNet(8, (1, 2, 1, 1), drop_path_rate=0.2).train()
    outs = model(torch.randn(2, 3, 32, 32))
    sum(o.square().mean() for o in outs).backward()
    for name in ("Stem.LoG.LoG.weight", "stages.0.blocks.0.Scharr_edge.conv_x.weight", "norm6.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


# ------------------------------------------------------------------ input and checkpoint errors


@pytest.mark.parametrize("shape", [(1, 3, 100, 128), (1, 3, 128, 48), (1, 3, 30, 30)])
def test_sizes_not_divisible_by_32_are_rejected(reduced_model, shape):
    with pytest.raises(ValueError, match="divisible by 32"):
        reduced_model(torch.zeros(shape))


def test_wrong_channel_count_is_rejected(reduced_model):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reduced_model(torch.zeros(1, 4, 64, 64))


def test_matches_tells_backbones_apart(reduced_state_dict):
    assert matches(reduced_state_dict)
    assert not matches({"backbone.Stem.proj.weight": torch.zeros(1)})
    assert matches({"Stem.LoG.conv_init.weight": torch.zeros(1)}, prefix="")


def test_build_rejects_a_non_legnet_state_dict():
    with pytest.raises(ValueError, match="not a LEGNet checkpoint"):
        build_from_state_dict({"backbone.Stem.proj.weight": torch.zeros(16, 3, 4, 4)})


def test_build_rejects_a_truncated_checkpoint(reduced_state_dict):
    sd = {k: v for k, v in reduced_state_dict.items() if "stages.4.blocks.1.mlp" not in k}
    with pytest.raises(ValueError, match="mlp"):
        build_from_state_dict(sd)


def test_build_rejects_disagreeing_aliases(reduced_state_dict):
    sd = dict(reduced_state_dict)
    key = "backbone.stages.0.blocks.0.LFEA.block.0.weight"
    sd[key] = sd[key] + 1
    with pytest.raises(ValueError, match="alias"):
        build_from_state_dict(sd)


def test_one_alias_is_enough(reduced_state_dict, reduced_model, small_input):
    sd = {k: v for k, v in reduced_state_dict.items() if ".LFEA.block." not in k}
    model = build_from_state_dict(sd)
    with torch.inference_mode():
        for a, b in zip(model(small_input), reduced_model(small_input)):
            assert torch.equal(a, b)


# ------------------------------------------------------------------ March 2025 key names


def _to_march_2025_names(state_dict: dict) -> dict:
    """Rename April-2025 block keys to the March-2025 LEG_Module layout (written from its source)."""
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"^(.*stages\.\d+\.blocks\.\d+\.)(.*)$", key)
        if m is None:
            out[key] = value
            continue
        head, tail = m.groups()
        for new, old in (
            ("LFEA.conv2d.", "conv2d."),
            ("LFEA.block.", "block."),
            ("LFEA.conv1d.", "conv1d."),
            ("LFEA.norm.", "norm."),
            ("Scharr_edge.conv_extra.", "EGA.conv_extra."),
            ("gaussian.conv_extra.", "EGA.conv_extra."),
            ("Scharr_edge.", "EGA.Scharr_edge."),
            ("gaussian.", "EGA.gaussian."),
            ("norm.", "norm1."),
        ):
            if tail.startswith(new):
                tail = old + tail[len(new) :]
                break
        out[head + tail] = value
    return out


def test_remap_legacy_keys_round_trips(reduced_state_dict):
    legacy = _to_march_2025_names(reduced_state_dict)
    assert any(".EGA." in k for k in legacy)
    back = remap_legacy_keys(legacy)
    assert set(back) == set(reduced_state_dict)
    assert all(back[k] is reduced_state_dict[k] for k in back)


def test_remap_leaves_current_layout_alone(reduced_state_dict):
    assert remap_legacy_keys(reduced_state_dict) == dict(reduced_state_dict)


def test_legacy_checkpoint_loads_and_matches(reduced_state_dict, reduced_model, small_input):
    model = build_from_state_dict(_to_march_2025_names(reduced_state_dict))
    with torch.inference_mode():
        for a, b in zip(model(small_input), reduced_model(small_input)):
            assert torch.equal(a, b)


def test_legacy_stem_without_bottleneck(reduced_state_dict, small_input):
    # The March 2025 stem Gaussian had no conv_extra: x -> norm(x + relu(bn(blur(x)))).
    legacy = _to_march_2025_names(reduced_state_dict)
    sd = {k: v for k, v in legacy.items() if "Stem.gaussian.conv_extra" not in k}
    model = build_from_state_dict(sd)
    assert model.Stem.gaussian.conv_extra is None
    stem = model.Stem
    with torch.inference_mode():
        x = stem.Conv_D(stem.LoG(small_input))
        g = stem.gaussian
        blur = torch.nn.functional.conv2d(x, g.gaussian.weight, padding=4, groups=x.shape[1])
        expected = stem.drfd(stem.norm(x + torch.relu(g.norm(blur))))
        assert torch.allclose(stem(small_input), expected, atol=1e-5, rtol=1e-5)  # BN folded in the port
        assert len(model(small_input)) == 4


# ------------------------------------------------------------------ end to end


def test_detector_end_to_end_matches_mmrotate(legnet_dir, reduced_io, golden_input):
    """Full detector on the LEGNet checkpoint; needs detector/checkpoint.py (detector engineer)."""
    try:
        import qgis_unravel.detector.checkpoint  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("qgis_unravel.detector"):
            pytest.skip(f"detector not implemented yet ({exc.name})")
        raise
    import qgis_unravel

    info = json.loads((legnet_dir / "legnet_reduced_model_info.json").read_text())
    detector = qgis_unravel.load_detector(legnet_dir / "legnet_reduced_model.pth")
    rcnn = info["test_cfg"]["rcnn"]
    thresholds = Thresholds(rcnn["score_thr"], rcnn["nms"]["iou_thr"], rcnn["max_per_img"])
    with torch.inference_mode():
        (det,) = detector(golden_input, thresholds=thresholds)

    ref_boxes = torch.from_numpy(reduced_io["det_bboxes"]).double()
    ref_labels = torch.from_numpy(reduced_io["det_labels"]).long()
    boxes = torch.as_tensor(det["boxes"]).double()
    scores = torch.as_tensor(det["scores"]).double()
    labels = torch.as_tensor(det["labels"]).long()
    assert len(labels) == len(ref_labels) == info["n_dets"]

    def order(lab: torch.Tensor, sc: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.lexsort((-sc.numpy(), lab.numpy())))

    mine, ref = order(labels, scores), order(ref_labels, ref_boxes[:, 5])
    assert torch.equal(labels[mine], ref_labels[ref])
    assert torch.allclose(scores[mine], ref_boxes[ref, 5], atol=1e-5, rtol=0)
    assert torch.allclose(boxes[mine, :4], ref_boxes[ref, :4], atol=1e-3, rtol=0)
    dangle = boxes[mine, 4] - ref_boxes[ref, 4]
    dangle = torch.remainder(dangle + math.pi / 2, math.pi) - math.pi / 2
    assert dangle.abs().max() < 1e-3


def test_cast_keeps_the_log_stem_float32(reduced_state_dict, small_input):
    model = build_from_state_dict(_realistic_log_scale(reduced_state_dict))
    with torch.inference_mode():
        ref = model(small_input)
    model.cast_(torch.bfloat16)
    assert model.Stem.LoG.LoG.weight.dtype == torch.float32
    assert model.Stem.LoG.norm1.running_var.dtype == torch.float32
    assert model.norm6.weight.dtype == torch.bfloat16
    assert model.stages[0].blocks[0].LFEA.block[0].weight.dtype == torch.bfloat16
    with torch.inference_mode():
        outs = model(small_input.bfloat16())
    for out, r in zip(outs, ref):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        assert ((out.float() - r).abs().max() / r.abs().max()).item() < 0.25
    with pytest.raises(ValueError, match="floating"):
        model.cast_(torch.int8)


def test_float64_stays_float64(reduced_model, small_input):
    x = small_input[..., :64, :64]  # float64 convolutions are slow on CPU
    model = build_from_state_dict(dict(reduced_model.state_dict()), prefix="").double()
    with torch.inference_mode():
        outs = model(x.double())
        ref = reduced_model(x)
    for out, r in zip(outs, ref):
        assert out.dtype == torch.float64
        assert torch.allclose(out.float(), r, atol=FEAT_ATOL, rtol=FEAT_RTOL)
