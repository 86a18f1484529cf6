"""``qgis-unravel models list|info|download`` (run through the zoo's own entry point)."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest
from test_zoo_support import LocalFileServer, write_card

from qgis_unravel.app import models_cli as cli
from qgis_unravel.zoo import cards as zcards

DATA = os.urandom(40_000)


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path):
    """A test card whose weights are on a local server; the CLI sees only this card."""
    with LocalFileServer({"/m.pth": DATA}) as srv:
        write_card(tmp_path / "cards", weights__urls=[srv.url("/m.pth")])
        monkeypatch.setattr(zcards, "models_dir", lambda: tmp_path / "cards")
        yield srv


def test_list_shows_shipped_models(capsys: pytest.CaptureFixture, cache: Path) -> None:
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "legnet-s-orcnn-dota10" in out and "unpublished" in out and str(cache) in out
    assert cli.main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"]: r["status"] for r in rows}["legnet-t-orcnn-dota10"] == "missing"


def test_info_shows_licence_citation_and_cache_path(capsys: pytest.CaptureFixture, cache: Path) -> None:
    assert cli.main(["models", "info", "legnet-s-orcnn-dota15"]) == 0
    out = capsys.readouterr().out
    assert "CC-BY-NC-4.0" in out and "container-crane" in out and "@inproceedings" in out
    assert str(cache / "models" / "legnet-s-orcnn-dota15" / "lwegnet_small_orcnn_dota15_ss.pth") in out
    assert cli.main(["models", "info", "legnet-s-orcnn-dota15", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights"]["sha256"] is None and data["status"] == "missing"


def test_unknown_model_is_one_line_error(capsys: pytest.CaptureFixture, cache: Path) -> None:
    assert cli.main(["models", "info", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 'no-such-model' is neither") and "Traceback" not in err


def test_download_with_yes_shows_licence_and_verifies(served: LocalFileServer, cache: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["models", "download", "test-model", "--yes"]) == 0
    captured = capsys.readouterr()
    assert "test notice" in captured.err and "100.0%" in captured.err
    assert "downloaded and verified" in captured.out
    assert (cache / "models" / "test-model" / "test-model.pth").read_bytes() == DATA
    assert cli.main(["models", "download", "test-model"]) == 0
    assert "already downloaded" in capsys.readouterr().out


def test_download_without_terminal_refuses_and_asks_for_yes(served: LocalFileServer, cache: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", _Stdin("", tty=False))
    assert cli.main(["models", "download", "test-model"]) == 1
    err = capsys.readouterr().err
    assert "test notice" in err and "pass --yes" in err and served.behaviour.seen == []


def test_download_asks_on_a_terminal(served: LocalFileServer, cache: Path, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", _Stdin("n\n", tty=True))
    assert cli.main(["models", "download", "test-model"]) == 1
    assert "not accepted" in capsys.readouterr().err and served.behaviour.seen == []
    monkeypatch.setattr("sys.stdin", _Stdin("y\n", tty=True))
    assert cli.main(["models", "download", "test-model"]) == 0
    assert "[y/N]" in capsys.readouterr().err


def test_register_plugs_into_another_parser(cache: Path) -> None:
    """The engine CLI adds 'models' with register(); its commands set func(args) -> int."""
    parser = argparse.ArgumentParser(prog="qgis-unravel")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("detect")
    cli.register(sub)
    args = parser.parse_args(["models", "list", "--json"])
    assert callable(args.func) and args.models_command == "list"
    with pytest.raises(SystemExit):
        parser.parse_args(["models"])  # a sub-command is required


@pytest.mark.parametrize(("name", "backbone"), [("reduced_model.pth", "UnravelNet"),
                                              ("legnet/legnet_reduced_model.pth", "LEGNet")])
def test_info_on_a_checkpoint_file_reads_its_architecture(golden_dir: Path, capsys: pytest.CaptureFixture,
                                                          cache: Path, name: str, backbone: str) -> None:
    """Any local mmrotate Oriented R-CNN checkpoint is accepted and its architecture inferred."""
    assert cli.main(["models", "info", str(golden_dir / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == backbone and info["num_classes"] == 15 and len(info["classes"]) == 15


def test_download_of_unpublished_model_explains_instead_of_asking(capsys: pytest.CaptureFixture,
                                                                   cache: Path) -> None:
    assert cli.main(["models", "download", "unravelnet-s-orcnn-dota10", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "No checkpoint has been published" in err and "--model PATH" in err
    assert "Licence accepted" not in err
