"""Oriented RPN head: raw maps and proposals against the golden mmrotate run."""

from __future__ import annotations

import math

import pytest
import torch

from qgis_unravel.detector.rpn import OrientedRPNHead
from qgis_unravel.detector.state_dict import strip_prefix


@pytest.fixture(scope="module")
def head(reduced_golden):
    sd, _ = reduced_golden
    rpn = OrientedRPNHead(64, 64).eval()
    rpn.load_state_dict(strip_prefix(sd, "rpn_head."))
    return rpn


def fpn_maps(io, batch: int = 1):
    return [torch.from_numpy(io[f"fpn_out{i}"])[None].repeat(batch, 1, 1, 1) for i in range(5)]


def assert_proposals_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual[:, :4], expected[:, :4], atol=1e-3, rtol=0)
    da = (actual[:, 4] - expected[:, 4] + math.pi / 2) % math.pi - math.pi / 2
    assert da.abs().max().item() < 1e-4
    torch.testing.assert_close(actual[:, 5], expected[:, 5], atol=1e-5, rtol=0)


def test_rpn_raw_maps_match_mmrotate(reduced_golden, head):
    _, io = reduced_golden
    with torch.inference_mode():
        cls_scores, bbox_preds = head(fpn_maps(io))
    for level in range(5):
        torch.testing.assert_close(
            cls_scores[level][0], torch.from_numpy(io[f"rpn_cls_score_l{level}"]), atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(
            bbox_preds[level][0], torch.from_numpy(io[f"rpn_bbox_pred_l{level}"]), atol=1e-4, rtol=1e-4
        )


def test_proposals_from_golden_maps_match_mmrotate(reduced_golden, head):
    _, io = reduced_golden
    cls_scores = [torch.from_numpy(io[f"rpn_cls_score_l{i}"])[None] for i in range(5)]
    bbox_preds = [torch.from_numpy(io[f"rpn_bbox_pred_l{i}"])[None] for i in range(5)]
    with torch.inference_mode():
        (proposals,) = head.proposals(cls_scores, bbox_preds)
    assert_proposals_close(proposals, torch.from_numpy(io["proposals"]))


def test_proposals_are_per_image_in_a_batch_and_cut_at_max_per_img(reduced_golden, head):
    """Two copies of the FPN maps (the chain fpn -> maps -> proposals) give the golden
    proposals twice, with no mixing across images, cut at a lowered max_per_img."""
    _, io = reduced_golden
    head.test_cfg.max_per_img = 300
    try:
        with torch.inference_mode():
            proposals = head.proposals(*head(fpn_maps(io, batch=2)))
    finally:
        head.test_cfg.max_per_img = 2000
    assert len(proposals) == 2
    for p in proposals:
        assert (p[1:, 5] <= p[:-1, 5]).all()
        assert_proposals_close(p, torch.from_numpy(io["proposals"][:300]))


def test_rpn_key_names_match_mmrotate(golden_dir):
    listed = {}
    for line in (golden_dir / "state_dict_keys_tiny.txt").read_text().splitlines():
        key, shape, _ = line.split("\t")
        if key.startswith("rpn_head."):
            listed[key[len("rpn_head.") :]] = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
    built = {k: list(v.shape) for k, v in OrientedRPNHead(256, 256).state_dict().items()}
    assert built == listed
