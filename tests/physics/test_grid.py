"""PixelGrid: the coordinate convention of DESIGN.md and its input checks."""

import pytest
import torch

from d4lenspinn.physics import PixelGrid, bin_pixels, check_field
from d4lenspinn.physics.grid import check_supersampling


@pytest.mark.parametrize("n", [4, 5, 150])
def test_pixel_centres_follow_the_convention(n):
    grid = PixelGrid(n, 0.05)
    j = torch.arange(n, dtype=torch.float64)
    expected = (j - (n - 1) / 2) * 0.05
    x, y = grid.coordinates(torch.float64)
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-15)  # x runs along columns
    torch.testing.assert_close(y[:, 0], expected, rtol=0, atol=1e-15)  # y runs along rows
    assert torch.equal(x, -x.flip(-1)) and torch.equal(y, -y.flip(-2))  # exactly symmetric about the origin
    assert grid.x.dtype == torch.float32 and grid.x.shape == (n, n)
    assert grid.half_extent == pytest.approx(x.max().item())
    assert grid.field_of_view == pytest.approx(n * 0.05)


def test_scaled_grid_keeps_the_centre():
    big = PixelGrid(100, 0.05).scaled(2.0)
    assert big.n == 100 and big.pixel_scale == pytest.approx(0.1)
    assert PixelGrid(100, 0.05).scaled(1.0, n=50).pixel_scale == pytest.approx(0.1)


@pytest.mark.parametrize(
    "n,scale,match",
    [
        (1, 0.1, "n must"),
        (True, 0.1, "n must"),
        (6.0, 0.1, "n must"),
        (6, 0.0, "pixel_scale"),
        (6, -1.0, "pixel_scale"),
        (6, float("nan"), "pixel_scale"),
    ],
)
def test_bad_grids_are_rejected(n, scale, match):
    with pytest.raises(ValueError, match=match):
        PixelGrid(n, scale)


def test_check_field_names_the_argument_and_expected_shape():
    grid = PixelGrid(8, 0.1)
    check_field(torch.zeros(2, 1, 8, 8), "kappa", 1, grid)
    with pytest.raises(ValueError, match=r"kappa must have shape \(B, 1, H, W\), got \(8, 8\)"):
        check_field(torch.zeros(8, 8), "kappa", 1, grid)
    with pytest.raises(ValueError, match=r"alpha must have shape \(B, 2, H, W\)"):
        check_field(torch.zeros(1, 1, 8, 8), "alpha", 2, grid)
    with pytest.raises(ValueError, match="square"):
        check_field(torch.zeros(1, 1, 8, 9), "image", None, grid)
    with pytest.raises(ValueError, match="8x8"):
        check_field(torch.zeros(1, 1, 9, 9), "image", None, grid)
    with pytest.raises(ValueError, match="floating"):
        check_field(torch.zeros(1, 1, 8, 8, dtype=torch.int64), "image", None, grid)
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_field([[0.0]], "image", None, grid)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_binned_supersampled_coordinates_are_the_pixel_averages(factor):
    """Sub-pixel centres averaged per pixel: x itself gives the pixel centres, x^2 the exact mean of the factor^2
    sub-pixel values, x_c^2 + p^2 (factor^2 - 1) / (12 factor^2)."""
    grid = PixelGrid(6, 0.2)
    fine = grid.supersampled(factor)
    assert fine.field_of_view == pytest.approx(grid.field_of_view) and fine.n == 6 * factor
    x, _ = fine.coordinates(torch.float64)
    centres, _ = grid.coordinates(torch.float64)
    torch.testing.assert_close(bin_pixels(x, factor), centres, rtol=0, atol=1e-14)
    spread = 0.2**2 * (factor**2 - 1) / (12 * factor**2)
    torch.testing.assert_close(bin_pixels(x * x, factor), centres * centres + spread, rtol=0, atol=1e-14)


@pytest.mark.parametrize("factor", [0, -1, 1.5, True])
def test_bad_supersampling_is_named(factor):
    with pytest.raises(ValueError, match="supersampling must be an integer >= 1"):
        check_supersampling(factor)
