"""Training data: polygons to boxes, chips with DOTA's visibility rule, and augmentations that
move the boxes with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from qgis_unravel.synthetic.objects import corners
from qgis_unravel.synthetic.paint import convex_coverage
from qgis_unravel.training.augment import hflip, rot90, vflip
from qgis_unravel.training.chips import chip_starts, chip_windows, make_chips
from qgis_unravel.training.geometry import min_area_rect


def test_min_area_rect_recovers_a_rotated_rectangle_in_le90():
    box = np.array([30.0, 40.0, 20.0, 8.0, 0.7])
    got = min_area_rect(corners(box)[[2, 0, 3, 1]])  # any corner order
    assert got == pytest.approx(box, abs=1e-9)
    tall = min_area_rect(corners(np.array([30.0, 40.0, 8.0, 20.0, 0.7])))
    assert tall[2] == pytest.approx(20.0) and tall[3] == pytest.approx(8.0)
    assert tall[4] == pytest.approx(0.7 - np.pi / 2)


def test_min_area_rect_of_an_irregular_polygon_encloses_it():
    pts = np.array([[0, 0], [10, 1], [12, 6], [3, 8], [-1, 4]], dtype=float)
    box = min_area_rect(pts)
    c, s = np.cos(box[4]), np.sin(box[4])
    u = (pts[:, 0] - box[0]) * c + (pts[:, 1] - box[1]) * s
    v = -(pts[:, 0] - box[0]) * s + (pts[:, 1] - box[1]) * c
    assert np.all(np.abs(u) <= box[2] / 2 + 1e-9) and np.all(np.abs(v) <= box[3] / 2 + 1e-9)
    assert box[2] >= box[3] and -np.pi / 2 <= box[4] < np.pi / 2


def test_degenerate_polygons_are_refused():
    with pytest.raises(ValueError):
        min_area_rect(np.array([[0, 0], [1, 1], [2, 2]], dtype=float))


def test_chip_grid_covers_the_raster_and_ends_flush():
    assert chip_starts(1000, 256, 64) == [0, 192, 384, 576, 744]
    assert chip_starts(200, 256, 64) == [0]
    assert len(chip_windows(1000, 600, 256, 64)) == 5 * 3
    with pytest.raises(ValueError):
        chip_starts(100, 64, 64)


def test_chips_keep_objects_mostly_inside_and_shift_them():
    boxes = np.array(
        [
            [100.0, 100.0, 40.0, 20.0, 0.0],  # wholly inside chip (0, 0)
            [250.0, 100.0, 40.0, 20.0, 0.0],  # 6/40 inside chip (0,0): dropped there
            [240.0, 180.0, 40.0, 20.0, 0.0],  # 36/40 inside chip (0, 0): kept, box whole
        ]
    )
    chips = make_chips(0, boxes, np.array([0, 1, 2]), 512, 512, 256, 64)
    first = next(c for c in chips if (c.x0, c.y0) == (0, 0))
    assert first.labels.tolist() == [0, 2]
    second = next(c for c in chips if (c.x0, c.y0) == (192, 0))
    assert 1 in second.labels.tolist()
    row = second.labels.tolist().index(1)
    assert second.boxes[row, :2] == pytest.approx([58.0, 100.0])
    empty = make_chips(0, boxes[:0], np.zeros(0, dtype=int), 512, 512, 256, 64)
    assert empty == []


def _box_image(box, size=64):
    img = np.zeros((size, size), dtype=np.float64)
    (x0, y0, x1, y1), cov = convex_coverage(corners(box), (size, size))
    img[y0:y1, x0:x1] = cov * 200
    return img


@pytest.mark.parametrize(
    "transform",
    [hflip, vflip, lambda i, b: rot90(i, b, 1), lambda i, b: rot90(i, b, 3), lambda i, b: rot90(i, b, 2)],
)
def test_augmentations_move_boxes_with_the_pixels(transform):
    # A long thin tilted box: a wrong centre, size or angle sign would redraw other pixels.
    box = np.array([24.0, 20.0, 30.0, 10.0, 0.5])
    out_img, out_boxes = transform(_box_image(box), box[None])
    assert -np.pi / 2 <= out_boxes[0, 4] < np.pi / 2
    assert np.abs(out_img - _box_image(out_boxes[0])).max() < 1e-6
