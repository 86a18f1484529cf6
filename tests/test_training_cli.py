"""The ``train``, ``evaluate`` and ``synth`` commands end to end on tiny inputs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from qgis_unravel.app.train_cli import main, register
from qgis_unravel.synthetic import CLASS_NAMES, write_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    tif, gpkg = folder / "scene_4.tif", folder / "scene_4.gpkg"
    sc = write_scene(tif, gpkg, seed=4, size=256)
    assert len(sc.boxes) >= 2
    return folder, tif, gpkg, sc


def test_register_adds_the_commands():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for command in ("train", "evaluate", "synth"):
        assert parser.parse_args([command] + _minimal(command)).command == command


def _minimal(command):
    return {
        "train": ["--out", "x"],
        "evaluate": ["--raster", "r", "--labels", "l", "--detections", "d"],
        "synth": ["--out", "x"],
    }[command]


def test_train_without_data_says_what_to_give(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no training data") and "\n" not in err


def test_train_with_a_wrong_class_field_names_the_fields(scene, tmp_path, capsys):
    _, tif, gpkg, _ = scene
    code = main(
        [
            "train",
            "--raster",
            str(tif),
            "--labels",
            str(gpkg),
            "--class-field",
            "kind",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no field 'kind'" in err and "class" in err and "Traceback" not in err


def test_train_writes_mmrotate_checkpoints_and_resumes(scene, tmp_path, capsys):
    import torch

    from qgis_unravel import load_detector

    _, tif, gpkg, _ = scene
    out = tmp_path / "run"
    args = [
        "train",
        "--raster",
        str(tif),
        "--labels",
        str(gpkg),
        "--preset",
        "pico",
        "--tile-size",
        "128",
        "--overlap",
        "32",
        "--batch-size",
        "1",
        "--warmup-iters",
        "1",
        "--checkpoint-every",
        "1",
        "--classes",
        ",".join(CLASS_NAMES),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args + ["--iterations", "2"]) == 0
    ckpt = torch.load(out / "latest.pth", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"meta", "state_dict"}
    assert tuple(ckpt["meta"]["CLASSES"]) == CLASS_NAMES and ckpt["meta"]["iter"] == 2
    assert (out / "iter_2.pth").is_file() and (out / "resume_state.pth").is_file()
    detector = load_detector(out / "latest.pth")
    assert detector.classes == list(CLASS_NAMES)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(entry["loss"]) for entry in log)
    capsys.readouterr()
    assert main(args + ["--iterations", "3", "--resume"]) == 0
    assert "resumed at iteration 2" in capsys.readouterr().out
    assert torch.load(out / "latest.pth", weights_only=True)["meta"]["iter"] == 3


def test_train_with_class_balanced_sampling(scene, tmp_path, capsys):
    import shutil

    import torch
    from osgeo import ogr

    _, tif, scene_gpkg, _ = scene
    gpkg = tmp_path / "labels.gpkg"  # the scene's cars, one of them relabelled as a rare ship
    shutil.copy(scene_gpkg, gpkg)
    ds = ogr.Open(str(gpkg), 1)
    lyr = ds.GetLayer(0)
    feat = lyr.GetNextFeature()
    feat.SetField("class", "ship")
    lyr.SetFeature(feat)
    ds = None
    out = tmp_path / "balanced"
    common = ["train", "--raster", str(tif), "--labels", str(gpkg), "--preset", "pico"]
    common += ["--tile-size", "128", "--overlap", "32", "--batch-size", "1", "--warmup-iters", "1"]
    common += ["--classes", ",".join(CLASS_NAMES), "--out", str(out), "--no-progress"]
    assert main(common + ["--oversample-thr", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --oversample-thr") and "\n" not in err
    assert main(common + ["--oversample-thr", "1.0", "--iterations", "1"]) == 0
    printed = capsys.readouterr().out
    assert "class-balanced sampling (threshold 1.0)" in printed
    plain = int(printed.split(" chips of 128 px")[0].split()[-1])
    per_pass = int(printed.split("class-balanced sampling (threshold 1.0): ")[1].split()[0])
    assert per_pass > plain  # with t = 1 the chips holding the ship are repeated
    meta = torch.load(out / "latest.pth", weights_only=True)["meta"]
    assert meta["oversample_thr"] == 1.0


def _write_detection_layer(path, boxes, names, scores, transform):
    from osgeo import ogr, osr

    from qgis_unravel.synthetic.objects import corners

    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    lyr = ds.CreateLayer("detections", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    lyr.CreateField(ogr.FieldDefn("score", ogr.OFTReal))
    for box, name, score in zip(boxes, names, scores):
        ring = ogr.Geometry(ogr.wkbLinearRing)
        pts = corners(box)
        for col, row in list(pts) + [pts[0]]:
            ring.AddPoint_2D(*(transform * (float(col), float(row))))
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        feat = ogr.Feature(lyr.GetLayerDefn())
        feat.SetField("class_name", name)
        feat.SetField("score", float(score))
        feat.SetGeometry(poly)
        lyr.CreateFeature(feat)
    ds = None


def test_evaluate_detection_layers_table_plot_and_json(scene, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from qgis_unravel.synthetic.io import scene_transform

    _, tif, gpkg, sc = scene
    names = [CLASS_NAMES[i] for i in sc.labels]
    # Every object found, plus one confident false alarm of the first object's class.
    boxes = np.vstack([sc.boxes, [[5.0, 5.0, 8.0, 4.0, 0.0]]])
    scores = [0.9] * len(sc.boxes) + [0.95]
    dets = tmp_path / "dets.gpkg"
    _write_detection_layer(dets, boxes, names + [names[0]], scores, scene_transform(4))
    plot, report = tmp_path / "pr.png", tmp_path / "ap.json"
    code = main(
        [
            "evaluate",
            "--raster",
            str(tif),
            "--labels",
            str(gpkg),
            "--detections",
            str(dets),
            "--plot",
            str(plot),
            "--json",
            str(report),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "mAP" in out and names[0] in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    numbers = json.loads(report.read_text())
    per_class = {c["class"]: c for c in numbers["classes"]}
    assert per_class[names[0]]["recall"] == pytest.approx(1.0)
    others = [c["ap"] for n, c in per_class.items() if n != names[0] and c["gts"] > 0]
    assert all(ap == pytest.approx(1.0) for ap in others)
    assert per_class[names[0]]["ap"] < 1.0  # the false alarm outranks the hits


def test_evaluate_runs_a_model_over_the_raster(scene, tmp_path, capsys):
    import torch

    from qgis_unravel.detector.checkpoint import save_checkpoint
    from qgis_unravel.training.model import PRESETS, build_model

    _, tif, gpkg, _ = scene
    torch.manual_seed(0)
    model = build_model(PRESETS["pico"], CLASS_NAMES)
    path = tmp_path / "pico.pth"
    save_checkpoint(model, path)
    # One tile; an untrained model scores every class near 1/6, so 0.5 keeps the run short.
    code = main(
        [
            "evaluate",
            "--raster",
            str(tif),
            "--labels",
            str(gpkg),
            "--model",
            str(path),
            "--tile-size",
            "256",
            "--overlap",
            "0",
            "--score-threshold",
            "0.5",
        ]
    )
    assert code == 0
    assert "mAP" in capsys.readouterr().out


def test_synth_writes_scene_pairs(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--seed", "3", "--count", "2", "--size", "128"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scene_3.gpkg",
        "scene_3.tif",
        "scene_4.gpkg",
        "scene_4.tif",
    ]


def test_evaluate_with_a_missing_file_says_which(tmp_path, capsys):
    code = main(
        ["evaluate", "--raster", str(tmp_path / "none.tif"), "--labels", "l.gpkg", "--detections", "d"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: file not found: {tmp_path / 'none.tif'}"
