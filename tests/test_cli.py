"""The detect command: exit codes, one-line user errors, JSON events, caching, disk full."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr
from test_engine_fakes import BrightObjectDetector, scene, write_raster

from qgis_unravel.app import cli
from qgis_unravel.detector import checkpoint
from qgis_unravel.worker import protocol

TESTS = Path(__file__).resolve().parent
RECTS = [(40.0, 40.0, 30.0, 10.0, 0.3, (250, 40, 40)), (100.0, 90.0, 24.0, 12.0, -0.5, (40, 250, 40))]


@pytest.fixture()
def fake_model(tmp_path, monkeypatch):
    """A checkpoint path whose loading gives the bright-object double; counts loads."""
    loads = []

    def load(path, device="cpu"):
        loads.append((str(path), device))
        if Path(path).read_bytes() == b"broken":
            raise RuntimeError("PytorchStreamReader failed reading zip archive")
        return BrightObjectDetector(tile_size=128, overlap=32)

    monkeypatch.setattr(checkpoint, "load_detector", load)
    monkeypatch.setattr(cli, "_DETECTORS", {})
    path = tmp_path / "fake_model.pth"
    path.write_bytes(b"not used")
    return path, loads


@pytest.fixture()
def raster(tmp_path):
    return write_raster(tmp_path / "scene.tif", scene(160, 200, RECTS))


def run(argv):
    events = []
    code = cli.run_detect([str(a) for a in argv], events.append)
    for event in events:
        protocol.decode(protocol.encode(event))  # every event is valid protocol JSON
    return code, events


def test_a_run_writes_the_layer_reports_counts_and_reuses_the_loaded_model(tmp_path, raster, fake_model):
    model, loads = fake_model
    out = tmp_path / "out.gpkg"
    code, events = run([raster, "-o", out, "--model", model, "--device", "cpu"])
    assert code == 0
    kinds = [e["type"] for e in events]
    assert kinds.count("result") == 1 and kinds[-1] == "result" and "progress" in kinds
    result = events[-1]
    assert result["count"] == 2 and result["counts"] == {"red": 1, "green": 1}
    assert result["output"] == str(out) and result["layer"] == "out" and result["partial"] is False
    assert ogr.Open(str(out)).GetLayerByName("out").GetFeatureCount() == 2
    code, _ = run([raster, "-o", tmp_path / "again.gpkg", "--model", model, "--device", "cpu"])
    assert code == 0 and len(loads) == 1  # the warm worker does not reload the model


def test_without_output_the_json_result_carries_the_features(raster, fake_model):
    code, events = run([raster, "--model", fake_model[0], "--json", "--device", "cpu"])
    assert code == 0
    features = events[-1]["features"]
    assert len(features) == 2 and len(features[0]["ring"]) == 5
    assert set(features[0]) >= {"class_id", "class_name", "score", "angle_deg", "length_m", "width_m",
                                "area_m2", "model", "source"}


def _bad_inputs(tmp_path):
    text = tmp_path / "text.tif"
    text.write_text("hello")
    noise = np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8)
    full = write_raster(tmp_path / "full.tif", noise,
                        tiled=True, blockxsize=128, blockysize=128)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return {
        "missing": ([tmp_path / "nope.tif"], "not found"),
        "not a raster": ([text], "cannot read"),
        "truncated": ([truncated], "truncated"),
        "1x1": ([write_raster(tmp_path / "one.tif", np.zeros((1, 1, 3), np.uint8))], "1 x 1"),
        "two bands": ([write_raster(tmp_path / "two.tif", np.ones((32, 32, 2), np.uint8))], "--bands"),
        "all NaN": ([write_raster(tmp_path / "nan.tif", np.full((32, 32, 3), np.nan, np.float32))],
                    "no valid"),
        "bad folder": ([tmp_path / "ok.tif", "-o", tmp_path / "no" / "such" / "dir.gpkg"], "does not exist"),
        "bad format": ([tmp_path / "ok.tif", "-o", tmp_path / "out.docx"], "no vector format"),
        "bad option": ([tmp_path / "ok.tif", "--tile", "abc"], "invalid int"),
    }


def test_bad_input_ends_with_exit_1_one_line_and_no_output(tmp_path, fake_model):
    write_raster(tmp_path / "ok.tif", scene(64, 64, RECTS[:1]))
    for name, (args, message) in _bad_inputs(tmp_path).items():
        out = tmp_path / f"{name.replace(' ', '_')}.gpkg"
        argv = list(args) + (["-o", out] if "-o" not in args else []) + ["--model", fake_model[0]]
        code, events = run(argv)
        errors = [e for e in events if e["type"] == "error"]
        assert code == 1, (name, events)
        assert len(errors) == 1 and errors[0]["kind"] == "user", name
        assert message in errors[0]["message"] and "\n" not in errors[0]["message"], (name, errors)
        assert not out.exists(), name
    leftovers = [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
    assert leftovers == []


def test_model_problems_are_user_errors(tmp_path, raster, fake_model):
    code, events = run([raster, "-o", tmp_path / "o.gpkg", "--model", "no-such-model-id"])
    assert code == 1 and events[-1]["kind"] == "user"
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"broken")
    code, events = run([raster, "-o", tmp_path / "o.gpkg", "--model", broken, "--device", "cpu"])
    assert code == 1 and "cannot load the model" in events[-1]["message"]


def test_existing_layer_needs_overwrite_or_append(tmp_path, raster, fake_model):
    out = tmp_path / "out.gpkg"
    base = [raster, "-o", out, "--model", fake_model[0], "--device", "cpu"]
    assert run(base)[0] == 0
    code, events = run(base)
    assert code == 1 and "--overwrite" in events[-1]["message"]
    assert run(base + ["--append"])[0] == 0
    assert ogr.Open(str(out)).GetLayerByName("out").GetFeatureCount() == 4
    assert run(base + ["--overwrite"])[0] == 0
    assert ogr.Open(str(out)).GetLayerByName("out").GetFeatureCount() == 2


def test_a_bug_is_an_internal_error_with_exit_2(tmp_path, raster, fake_model, monkeypatch):
    def broken_predict(self, images):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(BrightObjectDetector, "predict", broken_predict)
    code, events = run([raster, "-o", tmp_path / "o.gpkg", "--model", fake_model[0], "--device", "cpu"])
    assert code == 2 and events[-1]["type"] == "error" and events[-1]["kind"] == "internal"
    assert not (tmp_path / "o.gpkg").exists()


def test_main_json_mode_prints_one_json_object_per_line(tmp_path, raster, fake_model, capsys):
    code = cli.main(["detect", str(raster), "-o", str(tmp_path / "j.gpkg"), "--model", str(fake_model[0]),
                     "--json", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    events = [protocol.decode(line) for line in lines]
    assert events[-1]["type"] == "result" and events[-1]["count"] == 2


def test_main_human_mode_shows_progress_and_a_count_table(tmp_path, raster, fake_model, capsys):
    code = cli.main(["detect", str(raster), "-o", str(tmp_path / "h.gpkg"), "--model", str(fake_model[0]),
                     "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0
    assert "tiles" in captured.err and "[" in captured.err
    assert "red" in captured.out and "green" in captured.out and "total" in captured.out
    cli._DETECTORS.clear()  # not loaded yet: the bad input must still be the only line
    code = cli.main(["detect", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "x.gpkg"),
                     "--model", str(fake_model[0])])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().count("\n") == 0 and captured.err.startswith("error: ")
    assert "Traceback" not in captured.err


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    from qgis_unravel.detector import checkpoint
    from test_engine_fakes import BrightObjectDetector
    checkpoint.load_detector = lambda path, device="cpu": BrightObjectDetector(512, 0)
    from qgis_unravel.engine import writer  # import GDAL and friends before the limit
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    from qgis_unravel.app.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_disk_that_fills_up_during_the_write_leaves_the_old_file(tmp_path, fake_model):
    img = np.full((512, 512, 3), 30, np.uint8)
    for y in range(2, 512, 8):
        for x in range(2, 512, 8):
            img[y:y + 4, x:x + 4] = (250, 40, 40)  # 4096 small objects: a few hundred kB of features
    write_raster(tmp_path / "many.tif", img)
    small = write_raster(tmp_path / "small.tif", scene(160, 200, RECTS))
    out = tmp_path / "out.gpkg"
    model = fake_model[0]
    assert run([small, "-o", out, "--model", model, "--device", "cpu"])[0] == 0  # the previous result
    before = out.read_bytes()
    script = tmp_path / "limited.py"
    script.write_text(DISK_FULL.format(tests=str(TESTS), limit=len(before) + 150_000))
    for extra in (["--overwrite"], ["-o", str(tmp_path / "new.gpkg")]):
        argv = ["detect", str(tmp_path / "many.tif"), "-o", str(out), "--model", str(model),
                "--device", "cpu", "--tile", "512", "--json"] + extra
        done = subprocess.run([sys.executable, str(script)] + argv, capture_output=True, text=True,
                              timeout=120)
        events = [json.loads(line) for line in done.stdout.splitlines()]
        assert done.returncode == 1, done.stderr[-2000:]
        assert events[-1]["type"] == "error" and events[-1]["kind"] == "user"
        assert "could not write" in events[-1]["message"] and "\n" not in events[-1]["message"]
        assert out.read_bytes() == before
        assert not (tmp_path / "new.gpkg").exists()
        assert [p for p in tmp_path.iterdir() if ".partial" in p.name] == []


def test_a_cancelled_run_still_writes_a_complete_file_marked_partial(tmp_path, raster, fake_model):
    import threading

    cancel = threading.Event()
    events = []

    def emit(event):
        events.append(event)
        if event["type"] == "progress":
            cancel.set()

    argv = [str(raster), "-o", str(tmp_path / "p.gpkg"), "--model", str(fake_model[0]), "--device", "cpu",
            "--tile", "64", "--overlap", "0", "--batch", "1"]
    assert cli.run_detect(argv, emit, cancel) == 0
    result = events[-1]
    assert result["type"] == "result" and result["partial"] is True
    assert ogr.Open(str(tmp_path / "p.gpkg")).GetLayer(0).GetFeatureCount() == result["count"]


def test_a_raster_far_coarser_than_the_training_data_gets_a_hint():
    from qgis_unravel.engine.spec import ModelDefaults

    trained = ModelDefaults(gsd_min=0.1, gsd_max=1.0)
    assert cli.resolution_warnings(trained, 0.5) == []
    hint = cli.resolution_warnings(trained, 10.0)
    assert len(hint) == 1 and "--gsd" in hint[0] and "0.1 to 1" in hint[0]
    assert cli.resolution_warnings(ModelDefaults(), 10.0) == []


def test_count_table_and_eta_formatting():
    from qgis_unravel.app.terminal import _duration, format_counts

    table = format_counts({"counts": {"ship": 3, "plane": 12}, "count": 15, "output": "/x/out.gpkg",
                           "layer": "out", "partial": True})
    lines = table.splitlines()
    assert lines[2].split() == ["plane", "12"] and lines[3].split() == ["ship", "3"]
    assert lines[4].split() == ["total", "15"] and "PARTIAL" in lines[5] and "/x/out.gpkg" in lines[5]
    assert [_duration(s) for s in (5, 75, 3700)] == ["5s", "1m15s", "1h01m"]


def test_an_unknown_command_is_a_user_error(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["bogus"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0


def test_device_accepts_a_gpu_index_and_rejects_unknown_names() -> None:
    from qgis_unravel.app.cli import spec_from_argv
    from qgis_unravel.engine.errors import UserError

    assert spec_from_argv(["in.tif", "--json", "--model", "m", "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(UserError, match="cuda:N"):
        spec_from_argv(["in.tif", "--json", "--model", "m", "--device", "gpu"])


def test_the_json_result_reports_the_card_settings_that_ran_and_explicit_values_win(raster):
    demo = "demo-unravelnet-synthetic"
    code, events = run([raster, "--json", "--model", demo, "--device", "cpu"])
    assert code == 0, events[-1]
    ran = events[-1]["spec"]
    assert (ran["tile_size"], ran["overlap"], ran["score_threshold"]) == (512, 128, 0.3)
    assert (ran["nms_iou"], ran["merge_iou"], ran["max_detections"]) == (0.1, 0.1, 500)
    assert ran["mean"] == [123.675, 116.28, 103.53] and ran["model_name"] == demo
    assert any(e["type"] == "log" and "tile 512" in e["message"] for e in events)
    code, events = run([raster, "--json", "--model", demo, "--device", "cpu", "--tile", "256",
                        "--score", "0.6", "--iou", "0.2", "--merge-iou", "0.05"])
    assert code == 0, events[-1]
    ran = events[-1]["spec"]
    assert (ran["tile_size"], ran["overlap"], ran["score_threshold"]) == (256, 64, 0.6)
    assert (ran["nms_iou"], ran["merge_iou"]) == (0.2, 0.05)


def test_the_api_and_the_cli_refuse_the_same_value_with_the_same_message(raster, fake_model):
    from qgis_unravel.engine.detect import detect_raster
    from qgis_unravel.engine.errors import UserError
    from qgis_unravel.engine.spec import RunSpec

    code, events = run([raster, "--json", "--model", fake_model[0], "--overlap", "600", "--tile", "512"])
    assert code == 1
    with pytest.raises(UserError) as err:
        detect_raster(raster, BrightObjectDetector(), RunSpec(tile_size=512, overlap=600))
    assert events[-1]["message"] == str(err.value) == "overlap (600) must be smaller than the tile size (512)"
