"""Untrusted checkpoint files: nothing in them may run, and every refusal must say why.

Everything goes through the public front door, ``qgis_unravel.load_detector``, plus the zoo's
download path for a tampered file. The crafted pickle is first shown to be live (an unsafe load
does write the marker), so the safe-load test cannot pass by accident.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from test_zoo_support import LocalFileServer, card_dict

import qgis_unravel
from qgis_unravel.detector.checkpoint import CheckpointError
from qgis_unravel.zoo import ChecksumMismatchError, ZooError, apply_card, resolve_model
from qgis_unravel.zoo.cache import part_path
from qgis_unravel.zoo.cards import card_from_dict


class _Payload:
    """Unpickling this calls exec(), which writes a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _crafted_checkpoint(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"CLASSES": ("x",)}, "state_dict": {"backbone.w": torch.zeros(1)},
                "extra": _Payload(marker)}, path)
    return path


def test_crafted_pickle_is_live_when_loaded_unsafely(tmp_path: Path) -> None:
    """Control: the unsafe path really runs the payload (it only writes a file in tmp_path)."""
    marker = tmp_path / "marker-unsafe.txt"
    path = _crafted_checkpoint(tmp_path, marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_crafted_pickle_never_runs_and_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = _crafted_checkpoint(tmp_path, marker)
    with pytest.raises(CheckpointError) as info:
        qgis_unravel.load_detector(path)
    assert not marker.exists()
    message = str(info.value)
    assert "evil.pth" in message and "safely" in message


def test_plain_pickle_file_never_runs(tmp_path: Path) -> None:
    """A legacy (non-zip) pickle with the same payload is refused too."""
    marker = tmp_path / "marker2.txt"
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        qgis_unravel.load_detector(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_refused_clearly(golden_dir: Path, tmp_path: Path) -> None:
    data = (golden_dir / "reduced_model.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth is not a readable PyTorch checkpoint"):
        qgis_unravel.load_detector(path)


def test_empty_and_garbage_files_are_refused(tmp_path: Path) -> None:
    for name, content in (("empty.pth", b""), ("text.pth", b"this is not a checkpoint\n" * 10)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            qgis_unravel.load_detector(path)


def _retinanet_like() -> dict:
    sd = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
          "backbone.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
          "neck.lateral_convs.0.conv.weight": torch.zeros(256, 256, 1, 1),
          "bbox_head.retina_cls.weight": torch.zeros(135, 256, 3, 3),
          "bbox_head.retina_reg.weight": torch.zeros(45, 256, 3, 3)}
    return {"meta": {}, "state_dict": sd}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (_retinanet_like(), "ResNet"),
        ({"state_dict": {"stages.0.blocks.0.w": torch.zeros(1), "norm0.weight": torch.zeros(32)}},
         "backbone-only"),
        ({"state_dict": {"note": "no tensors here"}}, "no tensors"),
        ([1, 2, 3], "not a state dict"),
    ],
)
def test_wrong_architecture_is_refused_with_what_is_supported(tmp_path: Path, content, words: str) -> None:
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=words) as info:
        qgis_unravel.load_detector(path)
    if words in ("ResNet", "backbone-only"):
        assert "UnravelNet or LEGNet" in str(info.value)


def _served_card(url: str, sha: str, **changes):
    return card_from_dict(card_dict(weights__urls=[url], weights__sha256=sha, **changes), where="test")


def test_tampered_download_is_discarded_and_never_loaded(golden_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = (golden_dir / "reduced_model.pth").read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x55  # one flipped byte inside a tensor: still loadable, but not the file
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "cache"))
    cards = tmp_path / "cards"
    cards.mkdir()
    with LocalFileServer({"/m.pth": bytes(bad)}) as srv:
        data = card_dict(weights__urls=[srv.url("/m.pth")], weights__sha256=hashlib.sha256(good).hexdigest())
        (cards / "test-model.json").write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ChecksumMismatchError) as info:
            resolve_model("test-model", cards_dir=cards, confirm=lambda card: True)
    dest = tmp_path / "cache" / "models" / "test-model" / "test-model.pth"
    assert "discarded" in str(info.value) and "expected" in str(info.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_served_checkpoint_downloads_loads_and_matches_its_card(golden_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: local server -> verified cache -> safe load -> checked against the card."""
    good = (golden_dir / "reduced_model.pth").read_bytes()
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "cache"))
    cards = tmp_path / "cards"
    cards.mkdir()
    with LocalFileServer({"/m.pth": good}) as srv:
        data = card_dict(weights__urls=[srv.url("/m.pth")], weights__sha256=hashlib.sha256(good).hexdigest(),
                         classes=[f"class-{i}" for i in range(15)])
        (cards / "test-model.json").write_text(json.dumps(data), encoding="utf-8")
        path, card = resolve_model("test-model", cards_dir=cards, confirm=lambda card: True)
    detector = qgis_unravel.load_detector(path)
    apply_card(detector, card)
    assert detector.classes[0] == "class-0"
    wrong = _served_card("http://127.0.0.1:9/x.pth", None, classes=["a", "b"],
                         architecture__backbone="LEGNet")
    with pytest.raises(ZooError, match="does not match model card.*backbone is UnravelNet.*2"):
        apply_card(detector, wrong)
