"""``--model NAME|PATH``: files, cards, licences, manual and unpublished weights."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_zoo_support import LocalFileServer, write_card

from qgis_unravel.zoo import (
    LicenseNotAcceptedError,
    UnknownModelError,
    WeightsUnavailableError,
    license_accepted,
    resolve_model,
    weights_path,
)
from qgis_unravel.zoo.cache import read_record

DATA = os.urandom(50_000)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(root))
    return root


def test_existing_file_is_used_as_is(tmp_path: Path, cache: Path) -> None:
    ckpt = tmp_path / "mine.pth"
    ckpt.write_bytes(b"anything")
    assert resolve_model(str(ckpt)) == (ckpt.resolve(), None)
    with pytest.raises(UnknownModelError, match="is a folder"):
        resolve_model(tmp_path)


def test_unknown_names_and_missing_paths_are_explained(tmp_path: Path, cache: Path) -> None:
    write_card(tmp_path / "cards")
    with pytest.raises(UnknownModelError, match="Did you mean: test-model"):
        resolve_model("test-modl", cards_dir=tmp_path / "cards")
    with pytest.raises(UnknownModelError, match="checkpoint file not found"):
        resolve_model(str(tmp_path / "nope.pth"), cards_dir=tmp_path / "cards")


def test_download_needs_the_licence_accepted_first(tmp_path: Path, cache: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        write_card(tmp_path / "cards", weights__urls=[srv.url("/m.pth")])
        with pytest.raises(LicenseNotAcceptedError) as info:
            resolve_model("test-model", cards_dir=tmp_path / "cards")
        assert "CC-BY-NC-4.0" in str(info.value) and "models download test-model" in str(info.value)
        shown = []
        with pytest.raises(LicenseNotAcceptedError, match="nothing was downloaded"):
            resolve_model("test-model", cards_dir=tmp_path / "cards",
                          confirm=lambda card: shown.append(card.id) or False)
        assert shown == ["test-model"] and srv.behaviour.seen == []


def test_accepted_download_is_cached_and_reused(tmp_path: Path, cache: Path) -> None:
    with LocalFileServer({"/m.pth": DATA}) as srv:
        write_card(tmp_path / "cards", weights__urls=[srv.url("/m.pth")])
        progress = []
        path, card = resolve_model("test-model", progress=lambda d, t: progress.append(d),
                                   cards_dir=tmp_path / "cards", confirm=lambda card: True)
        assert path == cache / "models" / "test-model" / "test-model.pth" and path.read_bytes() == DATA
        assert card.id == "test-model" and license_accepted(card) and progress[-1] == len(DATA)
        requests = len(srv.behaviour.seen)

        def must_not_ask(card):
            raise AssertionError("asked again")

        again, _ = resolve_model("test-model", cards_dir=tmp_path / "cards", confirm=must_not_ask)
        assert again == path and len(srv.behaviour.seen) == requests


def test_manual_weights_explain_where_to_put_the_file(tmp_path: Path, cache: Path) -> None:
    cards = tmp_path / "cards"
    write_card(cards, weights__availability="manual", weights__urls=["https://pan.example.com/s/abc"])
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_model("test-model", cards_dir=cards)
    dest = cache / "models" / "test-model" / "test-model.pth"
    assert "https://pan.example.com/s/abc" in str(info.value) and str(dest) in str(info.value)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(DATA)
    path, _ = resolve_model("test-model", cards_dir=cards)
    assert path == dest and read_record(dest)["sha256"] == hashlib.sha256(DATA).hexdigest()


def test_manual_file_with_wrong_checksum_is_refused(tmp_path: Path, cache: Path) -> None:
    cards = tmp_path / "cards"
    write_card(cards, weights__availability="manual", weights__urls=["https://pan.example.com/s/abc"],
               weights__sha256="0" * 64)
    dest = cache / "models" / "test-model" / "test-model.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(DATA)
    with pytest.raises(ValueError, match="will not be used"):
        resolve_model("test-model", cards_dir=cards)


def test_unpublished_weights_say_so(tmp_path: Path, cache: Path) -> None:
    cards = tmp_path / "cards"
    write_card(cards, weights__availability="unpublished", weights__urls=[],
               weights__note="The authors did not publish it.")
    with pytest.raises(WeightsUnavailableError, match="No checkpoint has been published.*--model PATH"):
        resolve_model("test-model", cards_dir=cards)


def test_shipped_unravelnet_cards_are_honestly_unpublished(cache: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="unravelnet-t-orcnn-dota10"):
        resolve_model("unravelnet-t-orcnn-dota10")


def test_bundled_weights_come_from_the_cards_folder(tmp_path: Path, cache: Path) -> None:
    cards = tmp_path / "cards"
    write_card(cards, weights__availability="bundled", weights__urls=[], weights__filename=None,
               weights__path="weights/demo.pth", weights__sha256=hashlib.sha256(DATA).hexdigest())
    with pytest.raises(WeightsUnavailableError, match="plugin zip carries model cards, not weights"):
        resolve_model("test-model", cards_dir=cards)
    (cards / "weights").mkdir()
    (cards / "weights" / "demo.pth").write_bytes(DATA)
    path, card = resolve_model("test-model", cards_dir=cards)
    assert path == cards / "weights" / "demo.pth" and card.weights.availability == "bundled"
    (cards / "weights" / "demo.pth").write_bytes(DATA + b"x")
    with pytest.raises(ValueError, match="bytes|sha256"):
        resolve_model("test-model", cards_dir=cards)


def test_weights_path_is_inside_the_cache(tmp_path: Path, cache: Path) -> None:
    from qgis_unravel.zoo import get_card

    card = get_card("legnet-s-orcnn-dota10")
    assert weights_path(card) == cache / "models" / card.id / "lwegnet_small_orcnn_dota10_ss.pth"
