"""Noise of simulated images: each faithful preset's own recipe, or a peak signal-to-noise ratio per image.

Peak signal-to-noise (the broad presets; the same definition everywhere in the package and its benchmarks)::

    peak SNR = max over pixels of the noiseless, PSF-convolved image / sigma_bg

where ``sigma_bg`` is the standard deviation per pixel of the Gaussian background noise. The noise added to pixel
``I`` is Gaussian with variance ``sigma_bg^2 (1 + f max(I, 0) / peak)``: the background plus the source's shot noise
in its Poisson (Gaussian) approximation, whose variance at the peak is a fraction ``f`` (``shot_noise_fraction``) of
the background's. ``peak_snr = inf`` is a noiseless image.
"""

from __future__ import annotations

import torch

from .lens_sample import LensSample
from .presets import SimulationPreset

__all__ = ["add_noise", "add_peak_snr_noise", "noisy_images"]


def noisy_images(
    image: torch.Tensor, params: LensSample, preset: SimulationPreset, generator: torch.Generator | None
) -> torch.Tensor:
    """Noisy images ``(B, 1, n, n)`` of the noiseless ``image`` of lenses ``params``: the preset's peak-SNR noise
    (:func:`add_peak_snr_noise`) when it draws one, else its own recipe (:func:`add_noise`)."""
    if preset.peak_snr is None:
        return add_noise(image, params.exposure.float().reshape(-1, 1, 1, 1), preset, generator)
    return add_peak_snr_noise(image, params.peak_snr, params.shot_noise_fraction, generator)


def add_peak_snr_noise(
    image: torch.Tensor, peak_snr: torch.Tensor, shot_noise_fraction: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """``image (B, 1, n, n)`` (noiseless, PSF-convolved) plus Gaussian noise of peak signal-to-noise ``peak_snr (B,)``
    (``inf``: none) and source shot noise ``shot_noise_fraction (B,)`` (module docstring). One standard normal per
    pixel from ``generator`` (drawn on the CPU, whatever the SNR, so each image's stream is fixed)."""
    if not (peak_snr > 0).all():
        raise ValueError(
            f"peak_snr must be > 0 (inf for noiseless) for every image, got {peak_snr.tolist()}; "
            "0 marks lenses of a preset with its own noise recipe (use noisy_images with that preset)"
        )
    if (shot_noise_fraction < 0).any():
        raise ValueError(f"shot_noise_fraction must be >= 0, got {shot_noise_fraction.tolist()}")
    per_image = lambda v: v.to(device=image.device, dtype=image.dtype).reshape(-1, 1, 1, 1)  # noqa: E731
    peak = image.amax(dim=(-2, -1), keepdim=True).clamp_min(0)
    sigma = peak / per_image(peak_snr)  # 0 where noiseless
    relative = image.clamp_min(0) / peak.clamp_min(torch.finfo(image.dtype).tiny)
    std = sigma * torch.sqrt(1 + per_image(shot_noise_fraction) * relative)
    return image + torch.randn(image.shape, generator=generator).to(image.device) * std


def add_noise(
    image: torch.Tensor, exposure: torch.Tensor, preset: SimulationPreset, generator: torch.Generator | None
) -> torch.Tensor:
    """Noisy images ``(B, 1, n, n)`` from noiseless ``image`` [brightness per pixel], ``exposure (B, 1, 1, 1)`` [s],
    by the recipe of a faithful preset (one without ``peak_snr``; see :func:`noisy_images`).

    Without a camera, DeepLenseSim's Model I recipe (``simple_sim``): Gaussian shot noise ``sqrt(|I| / T)`` and
    background noise ``background_rms`` are added, then the counts are Poisson-sampled from the clipped result,
    ``Poisson(max(T (I + noise), 0)) / T``. With a camera, SimAPI's ``noise_for_model``: ``I`` plus Gaussian noise of
    the camera's background sigma and ``sqrt(max(I, 0) / T)``.
    """
    if preset.peak_snr is not None:
        raise ValueError(
            f"preset {preset.name!r} sets the noise by a peak SNR per image; use noisy_images(image, lenses, preset, "
            "generator)"
        )
    normal = lambda: torch.randn(image.shape, generator=generator)  # noqa: E731
    if preset.camera is None:
        noisy = image + normal() * (image.abs() / exposure).sqrt() + normal() * preset.background_rms
        return torch.poisson((noisy * exposure).clamp_min(0), generator=generator) / exposure
    background = preset.camera.background_sigma(preset.pixel_scale)
    return image + normal() * background + normal() * (image.clamp_min(0) / exposure).sqrt()
