"""Sersic brightness and the Gaussian PSF."""

import math

import pytest
import torch

from d4lenspinn.physics import PixelGrid
from d4lenspinn.physics.light import convolve_psf, gaussian_psf_kernel, sersic_brightness
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar


@pytest.mark.parametrize("n", [1.0, 4.0])
def test_sersic_radius_encloses_half_the_light(n):
    radius = 0.25 if n == 1.0 else 1.0  # resolve the n = 4 cusp with ~20 pixels per radius
    grid = PixelGrid(600, 0.01 if n == 1.0 else 0.05)
    x, y = grid.coordinates(torch.float64)
    light = sersic_brightness(x, y, 1.0, radius, n)[0]
    inside = light[torch.sqrt(x * x + y * y) < radius].sum()
    # n = 4 has wide wings that leave the field, so compare with the analytic total
    total = light.sum() if n == 1.0 else _sersic_total(radius, n) / grid.pixel_scale**2
    assert (inside / total).item() == pytest.approx(0.5, abs=0.01)


def _sersic_total(radius, n):
    b = 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n * n)
    return 2 * math.pi * n * radius**2 * math.exp(b) * math.gamma(2 * n) / b ** (2 * n)


def test_sersic_ellipse_and_centre():
    x, y = PixelGrid(41, 0.05).coordinates(torch.float64)
    light = sersic_brightness(x, y, 2.0, 0.3, 1.0, q=0.5, phi=0.0, center_x=0.2)[0]
    peak = torch.nonzero(light == light.max())[0]
    assert x[tuple(peak)].item() == pytest.approx(0.2) and y[tuple(peak)].item() == pytest.approx(0.0)
    # major axis along x: the profile falls more slowly along x than along y
    assert sersic_brightness(x.new_tensor([[0.7]]), x.new_tensor([[0.0]]), 2.0, 0.3, 1.0, 0.5) > sersic_brightness(
        x.new_tensor([[0.2]]), x.new_tensor([[0.5]]), 2.0, 0.3, 1.0, 0.5
    )


def test_psf_kernel_is_normalised_symmetric_with_the_right_width():
    kernel = gaussian_psf_kernel(0.087, 0.05, dtype=torch.float64)
    assert kernel.numel() % 2 == 1 and torch.equal(kernel, kernel.flip(0))
    assert kernel.sum().item() == pytest.approx(1.0)
    offsets = torch.arange(kernel.numel(), dtype=torch.float64) - kernel.numel() // 2
    sigma = torch.sqrt((kernel * offsets**2).sum()).item() * 0.05
    assert sigma * 2 * math.sqrt(2 * math.log(2)) == pytest.approx(0.087, rel=0.02)


def test_psf_convolution_conserves_flux_and_commutes_with_d4():
    image = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    image[0, 0, 10, 10], image[0, 0, 4, 13] = 1.0, 0.5
    kernel = gaussian_psf_kernel(0.16, 0.101, dtype=torch.float64)
    blurred = convolve_psf(image, kernel)
    assert blurred.shape == image.shape and blurred.sum().item() == pytest.approx(1.5)
    for g in D4_ELEMENTS:
        torch.testing.assert_close(convolve_psf(transform_scalar(image, g), kernel), transform_scalar(blurred, g))
