"""Fault injection: poisoned checkpoints (NaN, infinity, overflowing weights) through the CLI.

A tiny real UnravelNet Oriented R-CNN is saved with one tensor poisoned, then run by the real
``detect`` path (real loading, real network). NaN or infinity in the weights is a user error
with one clear line; finite weights that overflow at run time must not crash the run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine_fakes import write_raster

from qgis_unravel.app import cli
from qgis_unravel.detector.checkpoint import save_checkpoint
from qgis_unravel.training.model import PRESETS, build_model


@pytest.fixture(scope="module")
def pico_state():
    torch.manual_seed(0)
    model = build_model(PRESETS["pico"], ["plane", "ship"])
    return model


def _poisoned(tmp_path, model, key_filter, value):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k in state if key_filter(k) and state[k].is_floating_point())
    state[key].view(-1)[0] = value
    poisoned = build_model(PRESETS["pico"], ["plane", "ship"])
    poisoned.load_state_dict(state)
    path = tmp_path / "poisoned.pth"
    save_checkpoint(poisoned, path)
    return path, key


def _run(tmp_path, model_path):
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)
    raster = write_raster(tmp_path / "noise.tif", image)
    out = tmp_path / "out.gpkg"
    events: list = []
    cli._DETECTORS.clear()
    code = cli.run_detect([str(raster), "-o", str(out), "--model", str(model_path), "--device", "cpu",
                           "--tile", "96", "--overlap", "0"], events.append)
    cli._DETECTORS.clear()
    return code, events, out


def _backbone_conv(key: str) -> bool:
    return key.startswith("backbone.") and key.endswith("weight") and "norm" not in key


def _rpn_bias(key: str) -> bool:
    return key == "rpn_head.rpn_reg.bias"


@pytest.mark.parametrize("pick, value", [(_backbone_conv, float("nan")), (_rpn_bias, float("inf"))],
                         ids=["NaN in a backbone conv", "inf in the RPN regression bias"])
def test_nan_or_inf_in_the_weights_is_one_clear_user_error(tmp_path, pico_state, pick, value):
    path, key = _poisoned(tmp_path, pico_state, pick, value)
    code, events, out = _run(tmp_path, path)
    errors = [e for e in events if e["type"] == "error"]
    assert code == 1 and len(errors) == 1 and errors[0]["kind"] == "user", events[-3:]
    message = errors[0]["message"]
    assert "NaN or infinite" in message and key in message and "\n" not in message
    assert not out.exists()


def test_weights_that_overflow_at_run_time_do_not_crash_the_run(tmp_path, pico_state):
    path, _ = _poisoned(tmp_path, pico_state, _rpn_bias, 3e38)
    code, events, out = _run(tmp_path, path)
    assert code == 0, [e for e in events if e["type"] in ("error", "log")][-2:]
    assert events[-1]["type"] == "result" and out.exists()
