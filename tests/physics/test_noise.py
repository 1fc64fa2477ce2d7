"""The per-image noise estimate: close to the truth on simulated images, exactly D4-invariant, and a clear error
naming the images whose noise cannot be estimated."""

import pytest
import torch

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses
from d4lenspinn.physics import estimate_noise, frame_noise, high_pass_noise
from d4lenspinn.physics.noise import shot_noise_fraction
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar


def _noisy(snr=30.0, count=6, seed=0):
    preset = get_preset("model_ii_broad", clumpy_fraction=0.0, psf_scale=(1.0, 1.0))
    lenses = sample_lenses(preset, 0, count, torch.Generator().manual_seed(seed))
    clean = render_images(lenses, preset, noise=False).double()  # min-max normalised: peak 1
    sigma = torch.full((count,), 1 / snr, dtype=torch.float64)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return clean + sigma.reshape(-1, 1, 1, 1) * noise, sigma


@pytest.mark.parametrize("snr", [10.0, 100.0])
def test_it_recovers_a_known_gaussian_noise(snr):
    images, sigma = _noisy(snr)
    ratio = estimate_noise(images) / sigma
    assert ((ratio > 0.88) & (ratio < 1.12)).all(), ratio


@pytest.mark.parametrize("estimator", [estimate_noise, frame_noise, high_pass_noise])
def test_it_is_invariant_under_d4(estimator):
    images, _ = _noisy(count=3)
    reference = estimator(images)
    for g in D4_ELEMENTS:
        torch.testing.assert_close(
            estimator(transform_scalar(images, g)), reference, rtol=1e-14, atol=0
        )  # the 2x2 sums change order


def test_constant_zero_and_non_finite_images_are_named():
    images, _ = _noisy(count=5)
    images[1] = 0.0
    images[3] = 0.7
    images[4, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"images \[1, 3, 4\] \(of 5\) cannot be estimated"):
        estimate_noise(images)


def test_noiseless_images_get_the_floor():
    """A noiseless image (min-max normalised: span 1) is read as peak SNR 1 / relative_floor; without the floor its
    estimate is the tiny smooth variation of the Sersic tail, and an exactly flat sky raises."""
    preset = get_preset("model_ii")
    clean = render_images(sample_lenses(preset, 0, 2, torch.Generator().manual_seed(0)), preset, noise=False)
    torch.testing.assert_close(estimate_noise(clean, relative_floor=1e-3), torch.full((2,), 1e-3))
    assert (estimate_noise(clean, relative_floor=0.0) < 1e-4).all()
    flat_sky = torch.zeros(1, 1, 16, 16)
    flat_sky[..., 6:9, 6:9] = 1.0
    assert estimate_noise(flat_sky).item() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"images \[0\]"):
        estimate_noise(flat_sky, relative_floor=0.0)


def _shot_noisy(fraction, count=4, seed=3):
    """Residuals of noise ``sigma sqrt(1 + f light / peak)`` about the noiseless lensed light of simulated lenses
    (min-max normalised, so the background is 0), sigma = 0.01: ``(residual, light, sigma)``, flattened."""
    preset = get_preset("model_ii_broad", clumpy_fraction=0.0, psf_scale=(1.0, 1.0))
    lenses = sample_lenses(preset, 0, count, torch.Generator().manual_seed(seed))
    light = render_images(lenses, preset, noise=False).double().flatten(1)
    sigma = torch.full((count,), 0.01, dtype=torch.float64)
    std = sigma[:, None] * torch.sqrt(1 + fraction * light / light.amax(dim=1, keepdim=True))
    noise = torch.randn(light.shape, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    return std * noise, light, sigma


@pytest.mark.parametrize("fraction", [1.0, 4.0, 40.0])
def test_the_shot_noise_fraction_is_recovered(fraction):
    """f of noise ``sigma^2 (1 + f light / peak)`` from each image's residual (32 images, a median of 42 pixels
    above 0.3 of the peak): unbiased (the median within 15%), each within a factor 2 once the shot noise dominates
    the peak (f >= 4), and exactly invariant under any permutation of the pixels."""
    residual, light, sigma = _shot_noisy(fraction, count=32)
    estimate = shot_noise_fraction(residual, light, sigma)
    assert abs(estimate.median().item() / fraction - 1) < 0.15, estimate
    assert fraction < 4 or ((estimate > fraction / 2) & (estimate < 2 * fraction)).all(), estimate
    order = torch.randperm(residual.shape[1], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shot_noise_fraction(residual[:, order], light[:, order], sigma), estimate)


def test_background_noise_alone_gives_a_small_fraction():
    """No shot noise: the median f over 32 images stays below 0.3, and an image without finite residuals gets 0."""
    residual, light, sigma = _shot_noisy(0.0, count=32)
    assert shot_noise_fraction(residual, light, sigma).median() < 0.3
    residual[0] = float("nan")
    assert shot_noise_fraction(residual, light, sigma)[0] == 0
