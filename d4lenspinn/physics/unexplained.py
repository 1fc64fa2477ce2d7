"""What the fitted smooth lens cannot explain: the part of a signal it cannot absorb, and a scan for subhalos.

A lens modeller who has fitted the smooth lens (:func:`fit_smooth_lens`) asks two questions, both answered here to
first order about the fit, where the smooth model is linear in its parameters (its tangent space,
:func:`tangent_basis`):

* how much of a given signal (a substructure's image) would survive a refit of the smooth model
  (:func:`unexplained_signal`): the signal projected off the tangent space;
* is there a subhalo anywhere (:func:`subhalo_scan`: a trial subhalo at every position, as the sensitivity maps
  of gravitational imaging place one at every pixel, Despali et al. 2022): at every trial position ``p`` a small
  mass adds the deflection ``b^2 (theta - p) / (|theta - p|^2 + core^2)`` and changes the image by ``-PSF * (grad S
  . delta alpha)``, with ``S`` the fitted source at ``beta(theta)``; the chi^2 gained by fitting that template's
  strength ``b^2`` together with the smooth model is ``delta chi^2 = <r, t>^2 / |t|^2`` for ``t`` the template
  projected off the tangent space and ``r`` the residual projected likewise (positive masses only). Without a
  subhalo each position's ``delta chi^2`` is a chi^2 of one degree of freedom; the map's maximum is a detector that
  needs no training, and the map says where.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .grid import PixelGrid, bin_pixels, check_field, check_supersampling
from .lens_fit import LensFit, tangent_basis
from .light import convolve_psf, gaussian_psf_kernels
from .macro import MacroLens
from .shapelets import shapelet_basis, shapelet_order
from .smooth_lens import SersicSource, sersic_at, source_plane

__all__ = ["SubhaloScan", "scan_positions", "subhalo_scan", "unexplained_signal"]


class SubhaloScan(NamedTuple):
    """Per trial position (the centres of ``stride x stride`` pixel blocks), ``(B, 1, n / stride, n / stride)``."""

    delta_chi2: torch.Tensor  # chi^2 gained by a subhalo there (0 where the best strength is negative)
    strength: torch.Tensor  # its best-fit b^2 [arcsec^2]: the Einstein radius^2 of a point mass, to first order


def unexplained_signal(
    signal: torch.Tensor,
    fit: LensFit,
    grid: PixelGrid,
    psf_truncation: float = 4.0,
    fit_psf: bool = True,
    supersampling: int = 1,
) -> torch.Tensor:
    """The part of ``signal (B, 1, n, n)`` [image units] that no small change of the smooth model ``fit`` can
    absorb, in units of the fit's noise per pixel (``fit.pixel_sigma``), ``(B, 1, n, n)``.

    ``signal`` minus its least-squares projection onto :func:`tangent_basis` (``fit`` is the fit of the images the
    signal is added to, with the same ``grid``, ``psf_truncation``, ``fit_psf`` and ``supersampling``). To first
    order in the signal, refitting the smooth model to ``model + signal`` leaves exactly this residual, so its
    squared norm ``d^2`` is what a substructure adds to a refitted chi^2, and ``d`` the significance of a test that
    knows the substructure's pattern but must fit the smooth lens (the Fisher information left after profiling the
    smooth model out).
    Raises ``ValueError`` for a failed fit or a signal of another shape.
    """
    check_field(signal, "signal", 1, grid)
    if signal.shape[0] != fit.model.shape[0]:
        raise ValueError(f"signal has {signal.shape[0]} images, the fit {fit.model.shape[0]}")
    basis = tangent_basis(fit, grid, psf_truncation, fit_psf, supersampling)
    scaled = (signal.flatten(1) / fit.pixel_sigma.flatten(1)).double()[..., None]
    unexplained = scaled - basis @ (basis.transpose(1, 2) @ scaled)
    return unexplained.reshape(signal.shape).to(signal.dtype)


def scan_positions(grid: PixelGrid, stride: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The trial positions of :func:`subhalo_scan` at ``stride``, the centres of its blocks along one axis,
    ``(n / stride,)`` [arcsec]: a map's ``[row, column]`` lies at ``x = positions[column]``, ``y = positions[row]``."""
    return grid.axis(dtype, device).reshape(-1, stride).mean(dim=1)


def subhalo_scan(
    fit: LensFit,
    grid: PixelGrid,
    psf_truncation: float = 4.0,
    fit_psf: bool = True,
    stride: int = 1,
    core: float | None = None,
    chunk: int = 128,
    supersampling: int = 1,
) -> SubhaloScan:
    """Scan the residual of ``fit`` (from :func:`fit_smooth_lens` with this ``grid``, ``psf_truncation``,
    ``fit_psf`` and ``supersampling``, which the templates share) for a subhalo at the centre of every ``stride x
    stride`` block of pixels (``stride`` must divide the image size, so the positions are mapped to themselves by D4
    and the maps are D4-equivariant).

    ``core`` [arcsec, default one pixel] softens the trial mass (an unresolved subhalo). Runs in the fit's dtype
    (its tangent basis in float64), one image at a time, ``chunk`` positions per batch of templates (memory ``~ 10
    * chunk * (n s)^2`` numbers for supersampling ``s``; 128 was the fastest on one CPU thread at 64 px). Raises
    ``ValueError`` for a failed fit, a stride that does not divide the image, a core <= 0 or a bad supersampling.
    """
    n = grid.n
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or n % stride:
        raise ValueError(f"stride must be a positive integer dividing the image size {n}, got {stride!r}")
    core = grid.pixel_scale if core is None else core
    if not core > 0:
        raise ValueError(f"core must be > 0 arcsec, got {core}")
    check_supersampling(supersampling)
    dtype = fit.model.dtype
    basis = tangent_basis(fit, grid, psf_truncation, fit_psf, supersampling).to(dtype)  # (B, N, P)
    residual = fit.normalised_residual.flatten(1)[..., None]
    pixel_sigma = fit.pixel_sigma.flatten(1)
    residual = (residual - basis @ (basis.transpose(1, 2) @ residual))[..., 0]  # the smooth model refitted with it
    fine = grid.supersampled(supersampling)  # the templates' light is sampled there, then averaged per pixel
    gradient = _source_gradient(fit, fine).to(dtype)  # (B, 2, n s, n s)
    kernels = gaussian_psf_kernels(fit.psf_fwhm, grid.pixel_scale, psf_truncation, dtype).to(residual.device)
    x, y = fine.coordinates(dtype, residual.device)
    centres = scan_positions(grid, stride, dtype, residual.device)
    trial_y, trial_x = (value.flatten() for value in torch.meshgrid(centres, centres, indexing="ij"))
    delta_chi2, strength = [], []
    for image in range(residual.shape[0]):
        gained, best = [], []
        for start in range(0, trial_x.numel(), chunk):
            dx = x - trial_x[start : start + chunk, None, None]
            dy = y - trial_y[start : start + chunk, None, None]
            lensed = -(gradient[image, 0] * dx + gradient[image, 1] * dy) / (dx * dx + dy * dy + core**2)
            lensed = bin_pixels(lensed, supersampling)
            template = convolve_psf(lensed[None], kernels[image : image + 1])[0].flatten(1) / pixel_sigma[image]
            template = template - (template @ basis[image]) @ basis[image].T  # (chunk, N)
            overlap = template @ residual[image]
            norm = (template * template).sum(dim=1).clamp_min(torch.finfo(dtype).tiny)
            gained.append(torch.where(overlap > 0, overlap * overlap / norm, torch.zeros_like(overlap)))
            best.append(overlap / norm)
        delta_chi2.append(torch.cat(gained))
        strength.append(torch.cat(best))
    shape = (residual.shape[0], 1, n // stride, n // stride)
    return SubhaloScan(torch.stack(delta_chi2).reshape(shape), torch.stack(strength).reshape(shape))


def _source_gradient(fit: LensFit, grid: PixelGrid) -> torch.Tensor:
    """``grad_beta S`` at ``beta(theta)`` of every pixel, ``(B, 2, n, n)`` float64 [image units per arcsec]: the
    fitted source (Sersic profile and shapelets) with its fitted coefficients, before the PSF."""
    macro = MacroLens(*(value.detach().double() for value in fit.macro))
    source = SersicSource(*(value.detach().double() for value in fit.source))
    beta_x, beta_y = (value.requires_grad_(True) for value in source_plane(macro, grid))
    with torch.enable_grad():
        light = sersic_at(beta_x, beta_y, source)[:, 0]
        order = shapelet_order(fit.shapelets.shape[1])
        if order is not None:
            m = lambda v: v.reshape(-1, 1, 1)  # noqa: E731
            shapelets = shapelet_basis(beta_x - m(source.x), beta_y - m(source.y), m(source.radius), order)
            light = light + (fit.shapelets.detach().double()[..., None, None] * shapelets).sum(dim=1)
        grad_x, grad_y = torch.autograd.grad(light.sum(), (beta_x, beta_y))
    return torch.stack((grad_x, grad_y), dim=1)
