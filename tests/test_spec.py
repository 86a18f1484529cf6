"""RunSpec: one typed, immutable run spec; validated on itself, resolved once, JSON both ways."""

from __future__ import annotations

import dataclasses

import pytest

from qgis_unravel.engine.errors import UserError
from qgis_unravel.engine.spec import (
    DEFAULT_MEAN,
    DEFAULT_OVERLAP,
    DEFAULT_SCORE,
    DEFAULT_TILE_SIZE,
    ModelDefaults,
    RunSpec,
)
from qgis_unravel.zoo import get_card

DEMO = "demo-unravelnet-synthetic"


def test_the_spec_is_immutable_and_hashable():
    spec = RunSpec(input="a.tif", bands=[3, 2, 1], classes=["ship"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.tile_size = 512  # type: ignore[misc]
    assert spec.bands == (3, 2, 1) and spec.classes == ("ship",)
    assert hash(spec) == hash(RunSpec(input="a.tif", bands=(3, 2, 1), classes=("ship",)))


def test_card_values_fill_what_the_user_left_empty():
    spec = RunSpec(input="a.tif", model=DEMO).resolve(ModelDefaults.from_card(get_card(DEMO)))
    assert (spec.tile_size, spec.overlap) == (512, 128)
    assert (spec.score_threshold, spec.nms_iou, spec.max_detections) == (0.3, 0.1, 500)
    assert spec.merge_iou == spec.nms_iou  # the merge across tiles follows the NMS IoU
    assert spec.mean == DEFAULT_MEAN and spec.channel_order == "RGB"
    assert spec.model_name == DEMO and spec.resolved


def test_the_fair1m_card_gets_its_own_overlap():
    card = get_card("legnet-s-orcnn-fair1m")
    spec = RunSpec(model=card.id).resolve(ModelDefaults.from_card(card))
    assert (spec.tile_size, spec.overlap) == (1024, 500)


def test_an_explicit_value_always_wins_over_the_card():
    card = ModelDefaults.from_card(get_card(DEMO))
    spec = RunSpec(tile_size=1024, overlap=200, score_threshold=0.5, nms_iou=0.2, merge_iou=0.05,
                   max_detections=9, batch_size=3, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0),
                   channel_order="BGR").resolve(card)
    assert (spec.tile_size, spec.overlap, spec.score_threshold) == (1024, 200, 0.5)
    assert (spec.nms_iou, spec.merge_iou, spec.max_detections, spec.batch_size) == (0.2, 0.05, 9, 3)
    assert (spec.mean, spec.std, spec.channel_order) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), "BGR")


def test_global_defaults_without_a_card_and_a_small_tile_caps_the_overlap():
    spec = RunSpec(model="/x/my model.pth").resolve()
    assert (spec.tile_size, spec.overlap, spec.score_threshold) == (DEFAULT_TILE_SIZE, DEFAULT_OVERLAP,
                                                                    DEFAULT_SCORE)
    assert spec.batch_size == 2 and spec.model_name == "my model"
    small = RunSpec(tile_size=256).resolve(ModelDefaults(tile_size=1024, overlap=200))
    assert small.overlap == 64  # a quarter of the tile, not the card's 200


def test_resolution_happens_once():
    once = RunSpec(tile_size=300).resolve(ModelDefaults(overlap=40))
    assert once.resolve(ModelDefaults(tile_size=999, overlap=1)) is once


def test_json_round_trip_keeps_every_field():
    spec = RunSpec(input="in put.tif", output="o.gpkg", model=DEMO, bands=(1,), value_range=(0.0, 3000.0),
                   classes=("plane", "ship"), gsd=0.3, aoi="0,0,10,10,EPSG:3857", device="cuda:1")
    assert RunSpec.from_json(spec.to_json()) == spec
    resolved = spec.resolve(ModelDefaults.from_card(get_card(DEMO)))
    again = RunSpec.from_json(resolved.to_json())
    assert again == resolved and again.resolved


@pytest.mark.parametrize("fields, message", [
    ({"tile_size": 0}, "tile size must be a whole number >= 1"),
    ({"overlap": -1}, "overlap must be a whole number"),
    ({"tile_size": 256, "overlap": 256}, "must be smaller than the tile size"),
    ({"batch_size": 0}, "batch size"),
    ({"score_threshold": 1.5}, r"score threshold must be in \[0, 1\]"),
    ({"nms_iou": 0.0}, r"NMS IoU must be in \(0, 1\]"),
    ({"merge_iou": 2}, "merge IoU"),
    ({"gsd": -0.3}, "GSD"),
    ({"bands": (1, 2)}, "1 or 3 band numbers"),
    ({"value_range": (10.0, 5.0)}, "MIN < MAX"),
    ({"device": "gpu"}, "cuda:N"),
    ({"overwrite": True, "append": True}, "exclude each other"),
    ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
    ({"channel_order": "RBG"}, "RGB or BGR"),
])
def test_validation_gives_one_clear_line(fields, message):
    with pytest.raises(UserError, match=message) as err:
        RunSpec(**fields).validate()
    assert "\n" not in str(err.value)


def test_unknown_json_fields_are_refused():
    with pytest.raises(UserError, match="unknown run spec field.*tile"):
        RunSpec.from_dict({"tile": 512})
    with pytest.raises(UserError, match="not valid JSON"):
        RunSpec.from_json("{")
