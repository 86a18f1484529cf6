"""Model cards: the shipped ones are valid and honest, broken ones are refused with clear words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_zoo_support import card_dict, write_card

from qgis_unravel.paths import models_dir
from qgis_unravel.zoo import CardError, UnknownModelError, get_card, list_cards, load_card
from qgis_unravel.zoo.cards import card_from_dict

DOTA10_CLASSES = 15


def test_shipped_cards_load_and_cover_the_official_checkpoints() -> None:
    cards = {c.id: c for c in list_cards()}
    for expected in ("legnet-t-orcnn-dota10", "legnet-s-orcnn-dota10", "legnet-s-orcnn-dota15",
                     "legnet-s-orcnn-fair1m", "unravelnet-t-orcnn-dota10", "unravelnet-s-orcnn-dota10"):
        assert expected in cards
    assert cards["legnet-s-orcnn-dota10"].num_classes == DOTA10_CLASSES
    assert cards["legnet-s-orcnn-dota15"].classes[-1] == "container-crane"
    assert cards["legnet-s-orcnn-fair1m"].num_classes == 37
    assert cards["legnet-t-orcnn-dota10"].architecture.widths == (32, 64, 128, 256)
    assert cards["unravelnet-s-orcnn-dota10"].architecture.widths == (64, 128, 256, 512)


def test_shipped_cards_state_licence_and_never_guess_checksums() -> None:
    for card in list_cards():
        if card.id.startswith(("legnet-", "unravelnet-")):
            assert card.license.weights == "CC-BY-NC-4.0"
            assert "non-commercial" in card.license.notice.lower()
            assert card.citation.startswith("@")
        if card.weights.availability == "download":
            assert all(u.startswith("https://github.com/lwCVer/") for u in card.weights.urls), card.id
            # No checksum has been published for these files: the card must not invent one.
            assert card.weights.sha256 is None and card.weights.size_bytes is None
        if card.weights.availability == "unpublished":
            assert card.weights.urls == ()


def test_card_id_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "other-name.json"
    path.write_text(json.dumps(card_dict()), encoding="utf-8")
    with pytest.raises(CardError, match=r"other-name\.json.*'id'.*must match"):
        load_card(path)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"title": None}, "title", "must be a string"),
        ({"architecture__backbone": "ResNet50"}, "architecture.backbone", "supported: UnravelNet, LEGNet"),
        ({"architecture__widths": [16, 32, 64]}, "architecture.widths", "4 positive integers"),
        ({"classes": []}, "classes", "non-empty"),
        ({"classes": ["a", "b", "a"]}, "classes", "duplicate names: a"),
        ({"normalization__std": [1.0, 0.0, 1.0]}, "normalization.std", "> 0"),
        ({"tiling__overlap": 1024}, "tiling.overlap", "smaller than tile_size"),
        ({"thresholds__score": 1.5}, "thresholds.score", "must be in"),
        ({"weights__sha256": "ABC"}, "weights.sha256", "64 lower-case hexadecimal"),
        ({"weights__urls": []}, "weights.urls", "at least one link"),
        ({"weights__urls": ["ftp://x/y"]}, "weights.urls", "not an http"),
        ({"weights__filename": "../evil.pth"}, "weights.filename", "plain file name"),
        ({"weights__availability": "bundled", "weights__path": "../x.pth"}, "weights.path", "without '..'"),
        ({"weights__availability": "bundled"}, "weights.path", "is required"),
        ({"schema_version": 2}, "schema_version", "reads 1"),
        ({"id": "Bad Id"}, "id", "lower-case letters"),
        ({"citation": ""}, "citation", "must not be empty"),
    ],
)
def test_invalid_cards_name_file_and_field(changes: dict, field: str, words: str) -> None:
    with pytest.raises(CardError) as info:
        card_from_dict(card_dict(**changes), where="models/x.json")
    message = str(info.value)
    assert "models/x.json" in message and f"'{field}'" in message and words in message
    assert "models/README.md" in message


def test_missing_and_unknown_fields_are_refused() -> None:
    data = card_dict()
    del data["license"]["notice"]
    with pytest.raises(CardError, match=r"'license\.notice' is missing"):
        card_from_dict(data, where="c.json")
    with pytest.raises(CardError, match=r"'thresholds\.scroe' is not part of the schema"):
        card_from_dict(card_dict(thresholds__scroe=0.5), where="c.json")


def test_invalid_json_is_reported_with_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"id": "broken",', encoding="utf-8")
    with pytest.raises(CardError, match=r"broken\.json: not valid JSON"):
        list_cards(tmp_path)


def test_get_card_suggests_close_ids(tmp_path: Path) -> None:
    write_card(tmp_path)
    assert get_card("test-model", tmp_path).title == "Test model"
    with pytest.raises(UnknownModelError, match="Did you mean: test-model"):
        get_card("test-modle", tmp_path)


def test_readme_example_card_is_valid() -> None:
    """The schema documentation's example must itself pass validation."""
    text = (models_dir() / "README.md").read_text(encoding="utf-8")
    example = text.split("```json", 1)[1].split("```", 1)[0]
    card = card_from_dict(json.loads(example), where="README example")
    assert card.weights.availability == "bundled" and card.weights.path == "demo_model.pth"


def test_cards_and_download_task_import_without_torch(repo_root: Path) -> None:
    """The QGIS plugin lists cards and downloads weights but must never import torch."""
    code = (
        "import sys\n"
        "import qgis_unravel.zoo as zoo\n"
        "import qgis_unravel.app.models_cli\n"
        "assert zoo.list_cards(), 'no cards'\n"
        "import qgis_unravel.plugin.download_task\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
