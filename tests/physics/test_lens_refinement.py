"""The lens refined with a pixelated source: the truth stays put, a lens pulled off by a clumpy source moves back
toward the truth, refining is D4-equivariant for all 8 elements, bad input is named."""

import pytest
import torch

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.physics import PixelGrid, refine_lens
from d4lenspinn.physics.light import gaussian_psf_kernels
from d4lenspinn.symmetry import D4_ELEMENTS, transform_macro, transform_scalar

PRESET = get_preset("model_ii_broad", clumpy_fraction=1.0, noiseless_fraction=0.0)
GRID = PixelGrid(PRESET.n_pixels, PRESET.pixel_scale)
SOURCE_GRID = PixelGrid(64, 0.05)
SETTINGS = dict(regularisation=0.3, iterations=100)


def _clumpy(count=2, seed=0, snr=100.0):
    """Clumpy-source images (float64, brightness units) at peak SNR ``snr``, their true lens, PSF kernels and sigma."""
    lenses = sample_lenses(PRESET, 0, count, torch.Generator().manual_seed(seed))
    clean = render_images(lenses, PRESET, noise=False, normalise=False).double()
    sigma = clean.flatten(1).amax(dim=1) / snr
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    kernels = gaussian_psf_kernels(lenses.psf_fwhm, PRESET.pixel_scale, PRESET.psf_truncation, torch.float64)
    return clean + sigma.reshape(-1, 1, 1, 1) * noise, true_macro_lens(lenses), kernels, sigma


def _theta_error(lens, truth):
    return ((lens.theta_e - truth.theta_e).abs() / truth.theta_e).max().item()


def test_the_truth_stays_and_a_lens_off_by_4_percent_comes_back():
    images, truth, kernels, sigma = _clumpy()
    stay = refine_lens(images, truth, GRID, SOURCE_GRID, kernels, sigma, steps=3, **SETTINGS)
    # noise and the smoothness prior move the minimum of P a little off the truth (measured 0.52% in theta_E)
    assert _theta_error(stay.macro, truth) < 0.01 and (stay.penalised_chi2 <= stay.start_penalised_chi2).all()
    off = truth._replace(theta_e=truth.theta_e * 1.04, center_x=truth.center_x + 0.5 * GRID.pixel_scale)
    moved = refine_lens(images, off, GRID, SOURCE_GRID, kernels, sigma, steps=6, **SETTINGS)
    assert (moved.penalised_chi2 < 0.9 * moved.start_penalised_chi2).all()
    assert _theta_error(moved.macro, truth) < 0.01  # from 0.04
    assert (moved.macro.center_x - truth.center_x).abs().max() < 0.35 * GRID.pixel_scale  # from 0.5 px; measured 0.26
    assert moved.inversion.normalised_residual.shape == images.shape


def test_refining_is_d4_equivariant():
    """To 1e-6 after two steps in float64 (measured up to 4.6e-7 on the lens, 3.4e-7 relative on P: the unconverged
    conjugate gradients' round-off, amplified by each Gauss-Newton solve; 2e-11 before any step); the residual, in
    units of the noise at peak SNR 100, to 2e-4 (measured 5.7e-5: that lens difference across the ring's slope)."""
    images, truth, kernels, sigma = _clumpy(seed=1)
    start = truth._replace(theta_e=truth.theta_e * 0.97, gamma1=truth.gamma1 + 0.02, center_y=truth.center_y + 0.03)
    reference = refine_lens(images, start, GRID, SOURCE_GRID, kernels, sigma, steps=2, **SETTINGS)
    for g in D4_ELEMENTS[1:]:
        moved = refine_lens(
            transform_scalar(images, g), transform_macro(start, g), GRID, SOURCE_GRID, kernels, sigma, 2, **SETTINGS
        )
        expected = transform_macro(reference.macro, g).as_tensor()
        torch.testing.assert_close(moved.macro.as_tensor(), expected, rtol=0, atol=1e-6, msg=str(g))
        torch.testing.assert_close(moved.penalised_chi2, reference.penalised_chi2, rtol=1e-6, atol=0, msg=str(g))
        residual = transform_scalar(reference.inversion.normalised_residual, g)
        torch.testing.assert_close(moved.inversion.normalised_residual, residual, rtol=0, atol=2e-4, msg=str(g))


def test_bad_input_is_named():
    images, truth, kernels, sigma = _clumpy()
    with pytest.raises(ValueError, match="lens has 1 lenses for 2 images"):
        refine_lens(images, type(truth)(*(v[:1] for v in truth)), GRID, SOURCE_GRID, kernels, sigma)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        refine_lens(images, truth, GRID, SOURCE_GRID, kernels, sigma, steps=-1)
    with pytest.raises(ValueError, match="data"):
        refine_lens(images[:, :, :10], truth, GRID, SOURCE_GRID, kernels, sigma)
