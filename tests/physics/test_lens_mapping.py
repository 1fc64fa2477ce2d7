"""ray_trace and inverse_lens: coordinate conventions, averaging, gradients and the round trip."""

import pytest
import torch

from d4lenspinn.physics import PixelGrid, covering_source_grid, inverse_lens, ray_trace, source_positions
from d4lenspinn.physics import profiles as P

GRID = PixelGrid(16, 0.1)


def _constant_alpha(ax, ay, grid=GRID, dtype=torch.float64):
    shape = (1, 1, grid.n, grid.n)
    return torch.cat((torch.full(shape, ax, dtype=dtype), torch.full(shape, ay, dtype=dtype)), dim=1)


def test_source_positions_are_theta_minus_alpha():
    alpha = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    x, y = GRID.coordinates(torch.float64)
    beta = source_positions(alpha, GRID)
    torch.testing.assert_close(beta[:, 0], x - alpha[:, 0])
    torch.testing.assert_close(beta[:, 1], y - alpha[:, 1])


def test_zero_deflection_is_the_identity_both_ways():
    image = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    alpha = torch.zeros(2, 2, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(ray_trace(image, alpha, GRID), image, rtol=0, atol=1e-14)
    source, weight = inverse_lens(image, alpha, GRID)
    torch.testing.assert_close(source, image, rtol=0, atol=1e-14)
    torch.testing.assert_close(weight, torch.ones(2, 1, 16, 16, dtype=torch.float64), rtol=0, atol=1e-14)


def test_ray_trace_integer_shift_moves_pixels_the_right_way():
    """alpha = (+2 px, -1 px): image(theta) = source(theta - alpha), i.e. image[i, j] = source[i + 1, j - 2]."""
    source = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    image = ray_trace(source, _constant_alpha(0.2, -0.1), GRID)
    torch.testing.assert_close(image[0, 0, :-1, 2:], source[0, 0, 1:, :-2], rtol=0, atol=1e-12)
    assert image[0, 0, :, :2].abs().max() < 1e-12  # light from outside the source grid is zero
    assert image[0, 0, -1].abs().max() < 1e-12


def test_ray_trace_is_exact_for_a_linear_source_on_another_grid():
    """Bilinear interpolation reproduces linear functions; checks the align_corners convention on any grid."""
    source_grid = PixelGrid(40, 0.07)
    xs, ys = source_grid.coordinates(torch.float64)
    source = (0.3 + 1.5 * xs - 0.7 * ys)[None, None]
    alpha = 0.2 * torch.rand(1, 2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    beta = source_positions(alpha, GRID)
    expected = 0.3 + 1.5 * beta[:, 0] - 0.7 * beta[:, 1]
    torch.testing.assert_close(ray_trace(source, alpha, GRID, source_grid)[:, 0], expected, rtol=0, atol=1e-12)


def test_inverse_lens_integer_shift_and_empty_pixels():
    image = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    source, weight = inverse_lens(image, _constant_alpha(0.2, 0.0), GRID)  # every pixel lands 2 columns left
    torch.testing.assert_close(source[0, 0, :, :-2], image[0, 0, :, 2:], rtol=0, atol=1e-12)
    torch.testing.assert_close(weight[0, 0, :, :-2], torch.ones(16, 14, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(weight[0, 0, :, -2:], torch.zeros(16, 2, dtype=torch.float64))  # nothing lands here ...
    assert torch.equal(source[0, 0, :, -2:], torch.zeros(16, 2, dtype=torch.float64))  # ... so the source is 0


def test_inverse_lens_averages_pixels_that_land_together():
    image = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    image[0, 0, 5, 5], image[0, 0, 5, 6] = 1.0, 3.0
    alpha = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    alpha[0, 0, 5, 6] = 0.1  # pixel (5, 6) lands on pixel (5, 5)
    source, weight = inverse_lens(image, alpha, GRID)
    assert source[0, 0, 5, 5].item() == pytest.approx(2.0)
    assert weight[0, 0, 5, 5].item() == pytest.approx(2.0)
    assert weight[0, 0, 5, 6].item() == 0.0 and source[0, 0, 5, 6].item() == 0.0


def test_inverse_lens_splits_a_half_pixel_landing_between_neighbours():
    image = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    source, weight = inverse_lens(image, _constant_alpha(0.05, 0.0), GRID)
    torch.testing.assert_close(weight[0, 0, :, :-1], torch.ones(16, 15, dtype=torch.float64))
    assert weight[0, 0, :, -1].sum().item() == pytest.approx(8.0)  # the last column only gets half shares
    torch.testing.assert_close(source[0, 0, :, :-1], torch.ones(16, 15, dtype=torch.float64))


def test_gradcheck_ray_trace_and_inverse_lens():
    grid = PixelGrid(6, 0.1)
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    # deflections of a few tenths of a pixel, away from pixel boundaries where bilinear weights have kinks
    alpha = (0.013 + 0.03 * torch.rand(2, 2, 6, 6, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, a: inverse_lens(i, a, grid).source, (image, alpha))
    assert torch.autograd.gradcheck(lambda i, a: ray_trace(i, a, grid), (image, alpha))


def test_round_trip_recovers_the_source_where_it_is_multiply_imaged():
    """Ray-trace a smooth source through an SIS, then invert; the residual is bilinear smoothing (both directions)."""
    grid = PixelGrid(100, 0.05)
    x, y = grid.coordinates(torch.float64)
    alpha = P.sis_deflection(x, y, 1.0)[None]
    source_grid = PixelGrid(40, 0.05)
    xs, ys = source_grid.coordinates(torch.float64)
    source = torch.exp(-0.5 * ((xs - 0.1) ** 2 + (ys + 0.05) ** 2) / 0.15**2)[None, None]  # peak 1
    image = ray_trace(source, alpha, grid, source_grid)
    recovered, weight = inverse_lens(image, alpha, grid, source_grid)
    covered = weight > 2.0  # at least two image pixels' worth of light lands here
    assert covered.sum() > 1000  # measured 1276 of 1600 source pixels
    error = (recovered - source)[covered]
    assert error.pow(2).mean().sqrt().item() < 5e-3  # measured 4.1e-3 of the peak
    assert error.abs().max().item() < 0.07  # measured 0.058, next to beta = 0, fed by the ring


def test_covering_source_grid_holds_every_landing_point():
    x, y = GRID.coordinates(torch.float64)
    alpha = -2.0 * torch.stack((x, y))[None]  # beta = 3 theta: falls far off the image grid
    big = covering_source_grid(alpha, GRID)
    assert big.n == GRID.n and big.half_extent >= 3 * GRID.half_extent
    image = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    assert inverse_lens(image, alpha, GRID, big).weight.sum().item() == pytest.approx(256.0)
    assert inverse_lens(image, alpha, GRID).weight.sum().item() < 256.0  # the default grid loses light
    assert covering_source_grid(torch.zeros(1, 2, 16, 16), GRID).pixel_scale >= GRID.pixel_scale  # never smaller


def test_bad_input():
    image = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"alpha must have shape \(B, 2, H, W\)"):
        inverse_lens(image, torch.zeros(2, 1, 16, 16), GRID)
    with pytest.raises(ValueError, match="batch size 2 but alpha has 3"):
        inverse_lens(image, torch.zeros(3, 2, 16, 16), GRID)
    with pytest.raises(ValueError, match="min_weight"):
        inverse_lens(image, torch.zeros(2, 2, 16, 16), GRID, min_weight=0.0)
    with pytest.raises(ValueError, match="source has 8x8 pixels but the grid has 16x16"):
        ray_trace(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 16, 16), GRID)
    with pytest.raises(ValueError, match=r"image must have shape \(B, C, H, W\)"):
        inverse_lens(torch.rand(16, 16), torch.zeros(1, 2, 16, 16), GRID)
