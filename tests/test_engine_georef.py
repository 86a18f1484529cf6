"""Georeferencing: corners through the full affine, geodesic sizes, angle from north."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

from qgis_unravel.engine.georef import Georeferencer, box_corners
from qgis_unravel.engine.projdata import ensure_proj_data
from qgis_unravel.engine.raster import UNGEOREFERENCED_TRANSFORM
from qgis_unravel.ops import obb2poly

UTM33 = CRS.from_epsg(32633).to_wkt()
WGS84 = CRS.from_epsg(4326).to_wkt()


def test_corners_follow_the_project_convention():
    boxes = np.array([[10.0, 20, 8, 4, 0.0], [50, 60, 30, 10, 0.7], [5, 5, 12, 3, -1.2]])
    ours = box_corners(boxes).reshape(-1, 8)
    ref = obb2poly(torch.from_numpy(boxes)).numpy()
    assert np.allclose(ours, ref)
    assert np.allclose(box_corners(boxes[:1])[0], [[6, 18], [14, 18], [14, 22], [6, 22]])


def test_sizes_in_utm_are_ground_distances_and_angles_are_bearings():
    geo = Georeferencer(from_origin(500000, 5000000, 0.5, 0.5), UTM33)
    boxes = np.array([[100.0, 100, 80, 20, 0.0],           # long side east-west
                      [100.0, 100, 80, 20, -math.pi / 2],  # long side north-south
                      [100.0, 100, 80, 20, math.pi / 4]])  # turned 45 deg clockwise on screen
    m = geo.measures(geo.map_corners(box_corners(boxes)))
    k = 0.9996  # UTM scale on the central meridian: ground = grid / k
    assert m.length_m == pytest.approx([40 / k] * 3, rel=2e-5)
    assert m.width_m == pytest.approx([10 / k] * 3, rel=2e-5)
    assert m.area_m2 == pytest.approx([400 / k**2] * 3, rel=5e-5)
    assert m.angle_deg == pytest.approx([90.0, 0.0, 135.0], abs=1e-6)


def test_a_rotated_geotransform_turns_polygons_and_angles():
    turn = math.radians(30)  # map = rotation(-30 deg) of the pixel grid: north-up images lean
    transform = Affine(math.cos(turn), math.sin(turn), 500000.0, math.sin(turn), -math.cos(turn), 5e6)
    geo = Georeferencer(transform, UTM33)
    corners = geo.map_corners(box_corners(np.array([[0.0, 0, 2, 2, 0]])))[0]
    assert corners[1] - corners[0] == pytest.approx([2 * math.cos(turn), 2 * math.sin(turn)])
    m = geo.measures(geo.map_corners(box_corners(np.array([[50.0, 50, 40, 10, 0]]))))
    assert m.angle_deg[0] == pytest.approx(90 - 30)
    assert m.length_m[0] == pytest.approx(40 / 0.9996, rel=1e-3)


def test_geographic_crs_sizes_are_geodesic():
    ensure_proj_data()
    from pyproj import Geod

    step = 1e-5  # degrees per pixel
    geo = Georeferencer(from_origin(10.0, 45.01, step, step), WGS84)
    boxes = np.array([[500.0, 1000, 200, 50, 0.0]])  # long side along the parallel
    m = geo.measures(geo.map_corners(box_corners(boxes)))
    lat = 45.01 - 1000 * step
    _, _, east = Geod(ellps="WGS84").inv(10.004, lat, 10.006, lat)
    _, _, north = Geod(ellps="WGS84").inv(10.0, lat, 10.0, lat + 50 * step)
    assert m.length_m[0] == pytest.approx(east, rel=1e-4)
    assert m.width_m[0] == pytest.approx(north, rel=1e-4)
    assert m.area_m2[0] == pytest.approx(east * north, rel=1e-3)
    assert m.angle_deg[0] == pytest.approx(90.0, abs=0.01)
    assert geo.pixel_size_m(2000, 2000)[0] == pytest.approx(east / 200, rel=1e-3)


def test_without_georeferencing_coordinates_are_pixels_with_y_up_and_sizes_empty():
    geo = Georeferencer(UNGEOREFERENCED_TRANSFORM, None)
    corners = geo.map_corners(box_corners(np.array([[10.0, 20, 8, 4, 0]])))[0]
    assert corners[0].tolist() == [6.0, -18.0]
    m = geo.measures(corners[None])
    assert np.isnan(m.length_m).all() and np.isnan(m.area_m2).all()
    assert m.angle_deg[0] == pytest.approx(90.0)
    assert geo.pixel_size_m(100, 100) is None
