"""Pure-torch deformable conv v1 against cases whose answer is known without mmcv."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qgis_unravel.ops import deform_conv2d


def _data(seed: int = 0, c: int = 5, o: int = 4, h: int = 9, w: int = 11):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, c, h, w, generator=g), torch.randn(o, c, 3, 3, generator=g)


def test_zero_offset_is_a_plain_convolution():
    x, weight = _data()
    offset = torch.zeros(2, 18, 9, 11)
    out = deform_conv2d(x, offset, weight, padding=1)
    torch.testing.assert_close(out, F.conv2d(x, weight, padding=1), atol=1e-5, rtol=1e-5)


def test_chunking_does_not_change_the_result():
    x, weight = _data(1)
    offset = torch.randn(2, 18, 9, 11, generator=torch.Generator().manual_seed(3)) * 2
    whole = deform_conv2d(x, offset, weight, padding=1)
    chunked = deform_conv2d(x, offset, weight, padding=1, chunk_elements=50)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_integer_offset_shifts_the_input():
    x, weight = _data(2)
    offset = torch.zeros(2, 18, 9, 11)
    offset[:, 0::2] = 1.0  # every tap one row down
    offset[:, 1::2] = -2.0  # and two columns left
    out = deform_conv2d(x, offset, weight, padding=1)
    # tap (i, j) of output (h, w) reads x[h + i, w + j - 3]; zero outside the map
    full = F.conv2d(F.pad(x, (4, 4, 4, 4)), weight)  # full[u, v] = sum W[i, j] x[u + i - 4, v + j - 4]
    torch.testing.assert_close(out, full[:, :, 4:13, 1:12], atol=1e-5, rtol=1e-5)


def test_half_pixel_offset_is_the_bilinear_mean_with_zeros_outside():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    weight = torch.zeros(1, 1, 1, 1) + 1.0
    offset = torch.zeros(1, 2, 3, 4)
    offset[:, 1] = 0.5  # half a column right
    out = deform_conv2d(x, offset, weight)
    expected = 0.5 * x + 0.5 * torch.cat([x[..., 1:], torch.zeros(1, 1, 3, 1)], dim=-1)
    torch.testing.assert_close(out, expected)
    offset[:, 1] = -1.0  # exactly one column left: the leftmost column reads x = -1, which is outside
    out = deform_conv2d(x, offset, weight)
    assert torch.all(out[..., 0] == 0)
    torch.testing.assert_close(out[..., 1:], x[..., :-1])


def test_matches_grid_sample_away_from_the_border():
    x, weight = _data(4, c=3, o=2, h=12, w=12)
    g = torch.Generator().manual_seed(5)
    offset = torch.rand(2, 2, 12, 12, generator=g) * 3 - 1.5
    w1 = weight[:, :, :1, :1]
    out = deform_conv2d(x, offset, w1)
    ys = torch.arange(12.0)[:, None] + offset[:, 0]
    xs = torch.arange(12.0)[None, :] + offset[:, 1]
    grid = torch.stack([xs / 11 * 2 - 1, ys / 11 * 2 - 1], dim=-1)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    torch.testing.assert_close(out, F.conv2d(sampled, w1), atol=1e-5, rtol=1e-5)
