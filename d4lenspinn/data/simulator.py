"""Batched lensing simulator for the three DeepLense classes (no substructure, CDM subhalos, axion vortex).

Reproduces DeepLenseSim's Model I/II/III recipes (see :mod:`d4lenspinn.data.presets` and docs/data.md) with the
package's own analytic lenses, in torch, a whole batch at a time, on CPU or CUDA:

    image = normalise(noise(PSF * source(theta - alpha(theta))))

with ``alpha`` = SIE + external shear + substructure (point-mass subhalos, or a line of mass through the lens centre:
100 point masses, or its closed form). :class:`LensSample` (:mod:`.lens_sample`) holds every parameter of a batch, so
that any image, its noiseless version, a version without substructure and the true convergence can be recomputed
exactly. Parameters are drawn in :mod:`.sampling`, the source light (Sersic + knots) is :mod:`.sources`, the noise
:mod:`.noise`; this module renders and re-exports them.

Example::

    preset = get_preset("model_i")
    params = sample_lenses(preset, label=1, count=8, generator=torch.Generator().manual_seed(0))
    images = render_images(params, preset, generator=torch.Generator().manual_seed(1))  # (8, 1, 150, 150)
    kappa = true_convergence(params, preset)                                             # (8, 1, 150, 150)
"""

from __future__ import annotations

import hashlib
import math

import torch

from ..physics import MacroLens, PixelGrid
from ..physics import profiles as P
from ..physics.light import convolve_psf, gaussian_psf_kernel, gaussian_psf_kernels
from .lens_sample import LensSample, as_map
from .noise import add_noise, noisy_images
from .presets import SimulationPreset
from .sampling import LensStream, sample_lenses
from .sources import source_brightness

__all__ = [
    "LensSample",
    "sample_lenses",
    "LensStream",
    "deflection_field",
    "render_images",
    "true_convergence",
    "substructure_convergence",
    "true_macro_lens",
    "psf_kernel",
    "psf_kernels",
    "add_noise",
    "noisy_images",
    "normalise_images",
    "stream_seed",
]


def _einstein_radius_squared(mass: torch.Tensor, params: LensSample, preset: SimulationPreset) -> torch.Tensor:
    """Point-mass units: theta_E(m)^2 = theta_E(main)^2 * m / M_main, broadcast against ``mass``."""
    theta_e = params.theta_e.reshape(-1, *([1] * (mass.dim() - 1)))
    return theta_e**2 * mass / preset.main_halo_mass


def deflection_field(params: LensSample, x: torch.Tensor, y: torch.Tensor, preset: SimulationPreset) -> torch.Tensor:
    """Total deflection ``(B, 2, n, n)`` [arcsec] at coordinates ``x, y (n, n)``: SIE + shear + substructure (the
    shear about the optical axis, the rest about the lens centre)."""
    m = lambda v: as_map(v, x)  # noqa: E731
    shear = P.shear_deflection(x, y, m(params.shear_gamma1), m(params.shear_gamma2))
    x, y = x - m(params.lens_x), y - m(params.lens_y)  # (B, n, n) lens-centred coordinates
    alpha = P.sie_deflection(x, y, m(params.theta_e), m(params.lens_q), m(params.lens_phi)) + shear
    theta2 = _einstein_radius_squared(params.subhalo_mass, params, preset).to(x)
    if torch.any(theta2 > 0):
        P.point_masses_deflection(x, y, theta2, params.subhalo_x.to(x), params.subhalo_y.to(x), out=alpha)
    has_vortex = params.vortex_mass > 0
    if torch.any(has_vortex):
        alpha = alpha + _vortex_deflection(params, x, y, preset) * has_vortex.to(x).reshape(-1, 1, 1, 1)
    return alpha


_SEGMENT_SAMPLES = 200  # point masses that deposit a closed-form segment's convergence


def _vortex_points(params: LensSample, count: int, ends: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``(B, count)`` of equal point masses along each vortex: from ``-L`` to ``L`` inclusive (``ends``,
    DeepLenseSim's ``linspace``) or at the centres of ``count`` equal pieces (a quadrature of the uniform segment)."""
    if ends:
        s = torch.linspace(-1, 1, count, dtype=torch.float64)
    else:
        s = (torch.arange(count, dtype=torch.float64) + 0.5) / count * 2 - 1
    along = s * params.vortex_half_length[:, None]
    return along * torch.cos(params.vortex_angle)[:, None], along * torch.sin(params.vortex_angle)[:, None]


def _vortex_deflection(params: LensSample, x: torch.Tensor, y: torch.Tensor, preset: SimulationPreset):
    theta2 = _einstein_radius_squared(params.vortex_mass, params, preset)
    if preset.vortex_profile == "segment":
        half_length = params.vortex_half_length.clamp_min(1e-6)
        return P.line_segment_deflection(
            x, y, as_map(theta2.sqrt(), x), as_map(half_length, x), as_map(params.vortex_angle, x)
        )
    px, py = _vortex_points(params, preset.vortex_points, ends=True)
    strength = (theta2 / preset.vortex_points).to(x)[:, None].expand(-1, preset.vortex_points)
    return P.point_masses_deflection(x, y, strength, px.to(x), py.to(x))


def render_images(
    params: LensSample,
    preset: SimulationPreset,
    generator: torch.Generator | None = None,
    noise: bool = True,
    normalise: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Images ``(B, 1, n, n)`` float32: lensed source (Sersic + knots), each image's Gaussian PSF, noise, min-max.

    Each image is convolved with the PSF of its own ``params.psf_fwhm`` (NaN: the preset's), all in one batched
    call. The noise is the preset's (:func:`~d4lenspinn.data.noise.noisy_images`): its own recipe, or Gaussian noise
    at each image's ``params.peak_snr`` relative to the maximum of that image's noiseless render. ``generator``
    drives the noise (a CPU generator; noise is drawn on the CPU so results do not depend on the device).
    ``noise=False`` gives the noiseless image, ``normalise=False`` keeps brightness units.
    """
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    x, y = grid.coordinates(torch.float32, device)
    alpha = deflection_field(params, x, y, preset)
    light = source_brightness(params, x - alpha[:, 0], y - alpha[:, 1])  # (B, 1, n, n)
    image = convolve_psf(light, psf_kernels(params, preset)).cpu()
    if noise:
        image = noisy_images(image, params, preset, generator)
    return normalise_images(image) if normalise else image


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each image of ``(B, 1, n, n)`` to [0, 1], as the DeepLense datasets are."""
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-12)


def stream_seed(*keys: object) -> int:
    """A 63-bit seed that depends only on ``keys`` (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def psf_kernel(preset: SimulationPreset, dtype=torch.float32) -> torch.Tensor:
    """The preset's nominal separable Gaussian PSF kernel ``(K,)`` (see :func:`gaussian_psf_kernel`)."""
    return gaussian_psf_kernel(preset.psf_fwhm, preset.pixel_scale, preset.psf_truncation, dtype)


def psf_kernels(params: LensSample, preset: SimulationPreset, dtype=torch.float32) -> torch.Tensor:
    """The PSF kernel of every image of ``params``: ``(K,)`` when all have the preset's nominal width (NaN reads as
    nominal), else one row per image ``(B, K)`` (:func:`gaussian_psf_kernels`, zero-padded to a common ``K``)."""
    fwhm = params.psf_fwhm.nan_to_num(preset.psf_fwhm)
    if torch.all(fwhm == preset.psf_fwhm):
        return psf_kernel(preset, dtype)
    return gaussian_psf_kernels(fwhm, preset.pixel_scale, preset.psf_truncation, dtype)


def _deposit(px: torch.Tensor, py: torch.Tensor, weight: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """Bilinearly deposit point weights ``(B, K)`` at ``(px, py)`` [arcsec] onto ``(B, 1, n, n)`` pixels."""
    n = grid.n
    col = px / grid.pixel_scale + 0.5 * (n - 1)
    row = py / grid.pixel_scale + 0.5 * (n - 1)
    c0, r0 = torch.floor(col), torch.floor(row)
    tx, ty = col - c0, row - r0
    out = torch.zeros(px.shape[0], (n + 2) * (n + 2), dtype=weight.dtype)
    for dr, wy in ((0, 1 - ty), (1, ty)):
        for dc, wx in ((0, 1 - tx), (1, tx)):
            r = (r0 + dr).clamp(-1, n).long() + 1  # off-grid mass goes to a border that is cropped away
            c = (c0 + dc).clamp(-1, n).long() + 1
            out.scatter_add_(1, r * (n + 2) + c, weight * wy * wx)
    return out.reshape(-1, 1, n + 2, n + 2)[..., 1:-1, 1:-1]


def true_convergence(params: LensSample, preset: SimulationPreset) -> torch.Tensor:
    """The convergence ``(B, 1, n, n)`` float64 of each lens on the preset's grid: the SIE sampled at pixel centres
    plus :func:`substructure_convergence`."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    x, y = grid.coordinates(torch.float64)
    m = lambda v: as_map(v, x)  # noqa: E731
    kappa = P.sie_convergence(
        x, y, m(params.theta_e), m(params.lens_q), m(params.lens_phi), m(params.lens_x), m(params.lens_y)
    )
    return kappa + substructure_convergence(params, preset)


def substructure_convergence(params: LensSample, preset: SimulationPreset) -> torch.Tensor:
    """The convergence ``(B, 1, n, n)`` float64 of the substructure alone (0 for the no-substructure class).

    Each point mass ``theta_E^2`` contributes ``pi theta_E^2 / s^2`` spread bilinearly over the four nearest pixels;
    a vortex is its point masses (``vortex_profile="points"``) or 200 such points along its segment."""
    grid = PixelGrid(preset.n_pixels, preset.pixel_scale)
    to_kappa = math.pi / grid.pixel_scale**2
    theta2 = _einstein_radius_squared(params.subhalo_mass, params, preset)
    cx, cy = params.lens_x[:, None], params.lens_y[:, None]
    kappa = _deposit(params.subhalo_x + cx, params.subhalo_y + cy, to_kappa * theta2, grid)
    points = preset.vortex_points if preset.vortex_profile == "points" else _SEGMENT_SAMPLES
    px, py = _vortex_points(params, points, ends=preset.vortex_profile == "points")
    vortex = (to_kappa * _einstein_radius_squared(params.vortex_mass, params, preset) / points)[:, None]
    return kappa + _deposit(px + cx, py + cy, vortex.expand(-1, points), grid)


def true_macro_lens(params: LensSample) -> MacroLens:
    """The smooth lens of each sample (SIE + shear) as a float64 ``MacroLens``."""
    size = (1 - params.lens_q) / (1 + params.lens_q)  # |e| of the axis ratio (lenstronomy convention)
    e1, e2 = size * torch.cos(2 * params.lens_phi), size * torch.sin(2 * params.lens_phi)
    shear = params.shear_gamma1, params.shear_gamma2
    return MacroLens(params.theta_e, e1, e2, params.lens_x, params.lens_y, *shear)
