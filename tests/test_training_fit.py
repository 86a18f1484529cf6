"""A short training run on a tiny scene lowers the loss and fits its objects.

The run fine-tunes the shipped demo model to three class names it has never seen ("car",
"tank", "truck"): its classifier rows for them start untrained, so before training the
objects are not found, and after a few dozen iterations they must be (mAP >= 0.9). This checks
the whole chain: labels -> chips -> targets -> losses -> optimiser -> class remapping.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from qgis_unravel.paths import models_dir

NAMES = ["car", "tank", "truck"]
# Boxes (cx, cy, w, h, a) and the synthetic kind drawn for each: small vehicle, tank, truck.
BOXES = np.array(
    [[34, 36, 32, 15, 0.3], [92, 40, 44, 44, 0.0], [40, 94, 70, 22, -0.6], [98, 100, 30, 14, 1.2]]
)
KINDS = [2, 4, 3, 2]
LABELS = np.array([0, 1, 2, 0])
SIZE = 128


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from qgis_unravel.synthetic import io as sio
    from qgis_unravel.synthetic import objects
    from qgis_unravel.synthetic.background import make_background

    rng = np.random.default_rng(5)
    canvas = make_background(rng, SIZE).image
    for box, kind in zip(BOXES, KINDS):
        objects.draw(canvas, box, objects.CLASSES[kind].parts(rng), (2.0, 2.0))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    folder = tmp_path_factory.mktemp("tiny")
    transform = sio.scene_transform(0)
    sio.write_geotiff(folder / "tiny.tif", image, transform)
    sio.write_polygons(folder / "tiny.gpkg", BOXES, LABELS, transform, names=NAMES)
    return folder, image


def _map(detector, image) -> float:
    from qgis_unravel.training.evaluate import ImageDetections, ImageTruth, evaluate

    detector.eval()
    out = detector.predict([image])[0]
    dets = ImageDetections(out["boxes"], out["scores"], out["labels"])
    return evaluate([dets], [ImageTruth(BOXES, LABELS)], NAMES).mean_ap


def test_short_training_lowers_the_loss_and_fits_the_objects(tiny_scene, tmp_path):
    import torch

    from qgis_unravel.training.dataset import ChipDataset, Source
    from qgis_unravel.training.model import from_detector_checkpoint
    from qgis_unravel.training.trainer import TrainConfig, Trainer

    folder, image = tiny_scene
    card = json.loads((models_dir() / "demo-unravelnet-synthetic.json").read_text())
    weights = models_dir() / card["weights"]["path"]
    torch.manual_seed(0)
    model, fresh = from_detector_checkpoint(weights, NAMES)
    assert fresh == NAMES
    before = _map(model, image)
    data = ChipDataset([Source(folder / "tiny.tif", folder / "tiny.gpkg")], NAMES, SIZE, 0)
    assert len(data) == 1 and data.num_objects() == 4
    cfg = TrainConfig(
        iterations=40, batch_size=1, lr=1e-3, warmup_iters=1, checkpoint_every=10**6, log_every=5
    )
    history = Trainer(model, data, cfg, tmp_path).run(progress=False)
    losses = [h["loss"] for h in history]
    cls_losses = [h["loss_cls"] for h in history]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    assert np.mean(cls_losses[-8:]) < 0.5 * np.mean(cls_losses[:8])
    after = _map(model, image)
    assert before < 0.8, f"the untrained classes already score mAP {before:.3f}: the test proves nothing"
    assert after >= 0.9, f"mAP {after:.3f} after training (was {before:.3f})"
