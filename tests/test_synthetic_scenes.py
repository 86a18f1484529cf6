"""The synthetic scene generator: deterministic, varied, georeferenced, correctly labelled."""

from __future__ import annotations

import numpy as np
import pytest

from qgis_unravel.synthetic import CLASS_NAMES, make_scene, write_scene
from qgis_unravel.synthetic.objects import corners


@pytest.fixture(scope="module")
def scenes():
    # Ships need open water, which a 1024-pixel scene usually has.
    return [make_scene(seed, 1024) for seed in (1, 2)]


def test_same_seed_gives_identical_scenes(scenes):
    again = make_scene(1, 1024)
    assert np.array_equal(again.image, scenes[0].image)
    assert np.array_equal(again.boxes, scenes[0].boxes)
    assert np.array_equal(again.labels, scenes[0].labels)


def test_other_seeds_give_other_scenes(scenes):
    assert not np.array_equal(scenes[0].image, scenes[1].image)
    assert len({len(s.boxes) for s in scenes}) > 1 or not np.allclose(scenes[0].boxes, scenes[1].boxes)


def test_scenes_hold_at_least_five_classes(scenes):
    assert len(CLASS_NAMES) >= 5
    seen = set(np.concatenate([s.labels for s in scenes]).tolist())
    assert seen == set(range(len(CLASS_NAMES)))


def test_boxes_follow_le90_and_lie_inside(scenes):
    for s in scenes:
        assert s.image.shape == (1024, 1024, 3) and s.image.dtype == np.uint8
        b = s.boxes
        assert len(b) >= 8
        assert np.all(b[:, 2] >= b[:, 3]) and np.all(b[:, 3] >= 2)
        assert np.all(b[:, 4] >= -np.pi / 2) and np.all(b[:, 4] < np.pi / 2)
        pts = np.concatenate([corners(box) for box in b])
        assert pts.min() >= 0 and pts.max() <= 1024


def test_class_sizes_differ(scenes):
    boxes = np.concatenate([s.boxes for s in scenes])
    labels = np.concatenate([s.labels for s in scenes])
    length = {CLASS_NAMES[c]: boxes[labels == c, 2].mean() for c in np.unique(labels)}
    assert length["small-vehicle"] < length["large-vehicle"] < length["ship"]
    tanks = boxes[labels == CLASS_NAMES.index("storage-tank")]
    assert np.allclose(tanks[:, 2], tanks[:, 3])


def test_objects_do_not_overlap(scenes):
    import torch

    from qgis_unravel.ops import box_iou_rotated

    for s in scenes:
        ious = box_iou_rotated(
            torch.tensor(s.boxes, dtype=torch.float32), torch.tensor(s.boxes, dtype=torch.float32)
        )
        ious.fill_diagonal_(0)
        assert float(ious.max()) < 0.01


def test_objects_cross_tile_borders(scenes):
    # With 256-pixel tiles some objects straddle a tile border line, as in real imagery.
    s = scenes[0]
    assert len(s.boxes) >= 20
    pts = np.stack([corners(b) for b in s.boxes])  # (N, 4, 2)
    crossing = 0
    for line in (256, 512, 768):
        for axis in (0, 1):
            lo, hi = pts[:, :, axis].min(1), pts[:, :, axis].max(1)
            crossing += int(np.sum((lo < line) & (hi > line)))
    assert crossing >= 3


def test_objects_are_drawn_where_their_boxes_are(scenes):
    # Object pixels differ from the surroundings: the box interior is not plain background.
    s = scenes[0]
    from qgis_unravel.synthetic.paint import convex_coverage

    for box in s.boxes[:5]:
        (x0, y0, x1, y1), cov = convex_coverage(corners(box), s.image.shape[:2])
        inside = s.image[y0:y1, x0:x1][cov > 0.99].astype(float)
        assert inside.std() > 5 or abs(inside.mean() - s.image.mean()) > 10


def test_written_scene_is_georeferenced_and_labels_round_trip(tmp_path):
    import rasterio

    from qgis_unravel.training.labels import read_labels

    tif, gpkg = tmp_path / "s.tif", tmp_path / "s.gpkg"
    scene = write_scene(tif, gpkg, seed=11, size=256)
    with rasterio.open(tif) as src:
        assert src.count == 3 and src.crs is not None and src.crs.to_epsg() == 32631
        assert src.res == pytest.approx((0.15, 0.15))
        assert np.array_equal(np.moveaxis(src.read(), 0, -1), scene.image)
        transform, crs = src.transform, src.crs.to_wkt()
    labels = read_labels(gpkg, transform, crs, "class")
    assert labels.names == [CLASS_NAMES[i] for i in scene.labels]
    diff = labels.boxes - scene.boxes
    diff[:, 4] = (diff[:, 4] + np.pi / 4) % (np.pi / 2) - np.pi / 4  # squares may turn by 90 degrees
    assert np.abs(diff).max() < 1e-4


def test_degradations_vary_between_scenes():
    from qgis_unravel.synthetic.degrade import Degradation

    rng = np.random.default_rng(0)
    draws = [Degradation.sample(rng) for _ in range(40)]
    assert any(d.blur_sigma > 0 for d in draws) and any(d.blur_sigma == 0 for d in draws)
    assert any(d.haze > 0 for d in draws) and min(d.noise_std for d in draws) >= 1.0


def test_too_small_scene_is_refused():
    with pytest.raises(ValueError, match="at least 64"):
        make_scene(0, 32)
