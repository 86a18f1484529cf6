"""An internal error (a bug) in a terminal run: exit 2, one short line naming a crash log."""

from __future__ import annotations

import re
from pathlib import Path

from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.app import cli
from qgis_unravel.detector import checkpoint


def test_a_bug_gives_exit_2_one_line_and_the_log_path(tmp_path, monkeypatch, capsys):
    class Broken(BrightObjectDetector):
        def predict(self, images, *args, **kwargs):
            raise ZeroDivisionError("oops")

    monkeypatch.setattr(checkpoint, "load_detector", lambda path, device="cpu": Broken(128, 32))
    monkeypatch.setattr(cli, "_DETECTORS", {})
    monkeypatch.setenv("QGIS_UNRAVEL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "fake.pth"
    model.write_bytes(b"unused")
    rects = [(40.0, 40.0, 30.0, 10.0, 0.3, (250, 40, 40))]
    raster = write_raster(tmp_path / "scene.tif", scene(96, 96, rects))
    code = cli.main(["detect", str(raster), "-o", str(tmp_path / "o.gpkg"), "--model", str(model),
                     "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    match = re.fullmatch(r"error: internal error: ZeroDivisionError: oops \(details in (.+)\)", err)
    assert match, err
    log = Path(match.group(1))
    assert log.parent == tmp_path / "cache" / "logs" and "Traceback" in log.read_text()
    assert not (tmp_path / "o.gpkg").exists()
