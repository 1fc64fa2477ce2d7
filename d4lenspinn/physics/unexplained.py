"""What the fitted smooth lens cannot explain: the part of a signal it cannot absorb, and scans for substructure.

A lens modeller who has fitted the smooth lens (:func:`fit_smooth_lens`) asks these questions, all answered here to
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
  needs no training, and the map says where;
* is there a vortex (:func:`vortex_scan`): the same with a trial line of mass through the fitted lens centre, of
  several lengths and orientations, in place of the point mass; its largest ``delta chi^2`` against the subhalo
  scan's compares the two kinds of perturber.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .grid import PixelGrid, bin_pixels, check_field, check_supersampling
from .lens_fit import LensFit, tangent_basis
from .light import convolve_psf, gaussian_psf_kernels
from .macro import MacroLens
from .profiles import line_segment_deflection
from .shapelets import shapelet_basis, shapelet_order
from .smooth_lens import SersicSource, sersic_at, source_plane

__all__ = [
    "VORTEX_ANGLES",
    "VORTEX_HALF_LENGTHS",
    "SubhaloScan",
    "VortexScan",
    "scan_positions",
    "subhalo_scan",
    "substructure_scans",
    "unexplained_signal",
    "vortex_angles",
    "vortex_scan",
]

VORTEX_HALF_LENGTHS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # theta_E units: a point at the centre to past the ring
VORTEX_ANGLES = 16  # orientations k pi / 16


class SubhaloScan(NamedTuple):
    """Per trial position (the centres of ``stride x stride`` pixel blocks), ``(B, 1, n / stride, n / stride)``."""

    delta_chi2: torch.Tensor  # chi^2 gained by a subhalo there (0 where the best strength is negative)
    strength: torch.Tensor  # its best-fit b^2 [arcsec^2]: the Einstein radius^2 of a point mass, to first order


class VortexScan(NamedTuple):
    """Per trial line, ``(B, len(half_lengths), angles)``: rows the half-lengths, columns the orientations."""

    delta_chi2: torch.Tensor  # chi^2 gained by a vortex there (0 where the best strength is negative)
    strength: torch.Tensor  # its best-fit total mass theta_m^2 [arcsec^2], to first order


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
    family = _subhalo_family(fit, grid, stride, core)
    (scan,) = _template_scan(_projection(fit, grid, psf_truncation, fit_psf, supersampling), (family,), chunk)
    return scan


def vortex_scan(
    fit: LensFit,
    grid: PixelGrid,
    psf_truncation: float = 4.0,
    fit_psf: bool = True,
    half_lengths: tuple[float, ...] = VORTEX_HALF_LENGTHS,
    angles: int = VORTEX_ANGLES,
    core: float | None = None,
    chunk: int = 128,
    supersampling: int = 1,
) -> VortexScan:
    """Scan the residual of ``fit`` (made as for :func:`subhalo_scan`) for a vortex: a uniform line of mass through
    the fitted lens centre (DeepLenseSim's axion vortex) of every half-length ``half_lengths`` [in units of the
    fitted theta_E] and orientation ``k pi / angles`` (``k = 0 .. angles - 1``; ``angles`` even, so D4 maps the set
    to itself and the map is D4-equivariant, its angle axis permuted), each point of it the subhalo scan's softened
    trial mass (``core`` [arcsec], default one pixel; :func:`~d4lenspinn.physics.profiles.line_segment_deflection`).
    Its delta chi^2 and best strength (the line's total mass as ``theta_m^2`` [arcsec^2], to first order) are those
    of :func:`subhalo_scan` with this template: a lens modeller's second trial perturber, so the two maxima compare
    a point mass against a line. Raises ``ValueError`` for a failed fit, a bad ``half_lengths`` or ``angles``, a
    core <= 0 or a bad supersampling."""
    family = _vortex_family(fit, grid, half_lengths, angles, core)
    (scan,) = _template_scan(_projection(fit, grid, psf_truncation, fit_psf, supersampling), (family,), chunk)
    return scan


def substructure_scans(
    fit: LensFit,
    grid: PixelGrid,
    psf_truncation: float = 4.0,
    fit_psf: bool = True,
    stride: int = 1,
    chunk: int = 128,
    supersampling: int = 1,
) -> tuple[SubhaloScan, VortexScan]:
    """:func:`subhalo_scan` at ``stride`` and :func:`vortex_scan` with its default lines, the tangent space and the
    source's gradient computed once for both (the same maps as the two calls); raises as they do."""
    families = (_subhalo_family(fit, grid, stride, None), _vortex_family(fit, grid, VORTEX_HALF_LENGTHS, VORTEX_ANGLES))
    points, lines = _template_scan(_projection(fit, grid, psf_truncation, fit_psf, supersampling), families, chunk)
    return points, lines


def vortex_angles(count: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The orientations ``k pi / count`` [radians from +x], ``k = 0 .. count - 1``, of :func:`vortex_scan`."""
    return torch.arange(count, dtype=dtype, device=device) * (math.pi / count)


def _check_core(core: float | None, grid: PixelGrid) -> float:
    """The trial mass's softening [arcsec]: ``core``, by default one pixel; ``ValueError`` unless > 0."""
    core = grid.pixel_scale if core is None else core
    if not core > 0:
        raise ValueError(f"core must be > 0 arcsec, got {core}")
    return core


_Deflection = Callable[[int, torch.Tensor, torch.Tensor, slice], tuple[torch.Tensor, torch.Tensor]]


class _Family(NamedTuple):
    """Trial perturbers of one kind: ``deflection(image, x, y, trials) -> (alpha_x, alpha_y)`` of unit strength
    (each ``(len(trials), n s, n s)`` on the supersampled grid ``x, y``) for ``count`` trials, read out as ``wrap``
    of maps of ``shape`` (after the batch)."""

    deflection: _Deflection
    count: int
    shape: tuple[int, ...]
    wrap: type


def _subhalo_family(fit: LensFit, grid: PixelGrid, stride: int, core: float | None) -> _Family:
    n = grid.n
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or n % stride:
        raise ValueError(f"stride must be a positive integer dividing the image size {n}, got {stride!r}")
    core = _check_core(core, grid)
    centres = scan_positions(grid, stride, fit.model.dtype, fit.model.device)
    trial_y, trial_x = (value.flatten() for value in torch.meshgrid(centres, centres, indexing="ij"))

    def deflection(image: int, x: torch.Tensor, y: torch.Tensor, trials: slice) -> tuple[torch.Tensor, torch.Tensor]:
        dx, dy = x - trial_x[trials, None, None], y - trial_y[trials, None, None]
        softened = dx * dx + dy * dy + core**2
        return dx / softened, dy / softened

    return _Family(deflection, len(trial_x), (1, n // stride, n // stride), SubhaloScan)


def _vortex_family(
    fit: LensFit, grid: PixelGrid, half_lengths: tuple[float, ...], angles: int, core: float | None = None
) -> _Family:
    if not (isinstance(half_lengths, tuple) and half_lengths and all(0 < value < math.inf for value in half_lengths)):
        raise ValueError(f"half_lengths must be a non-empty tuple of numbers > 0 (theta_E units), got {half_lengths!r}")
    if isinstance(angles, bool) or not isinstance(angles, int) or angles < 2 or angles % 2:
        raise ValueError(f"angles must be an even integer >= 2 (D4 maps k pi / angles to itself), got {angles!r}")
    core = _check_core(core, grid)
    dtype, device = fit.model.dtype, fit.model.device
    theta_e, centre_x, centre_y = (value.detach().to(dtype) for value in fit.macro[:1] + fit.macro[3:5])
    scales = torch.tensor(half_lengths, dtype=dtype, device=device)
    directions = vortex_angles(angles, dtype, device)
    trial_length, trial_angle = (value.flatten() for value in torch.meshgrid(scales, directions, indexing="ij"))

    def deflection(image: int, x: torch.Tensor, y: torch.Tensor, trials: slice) -> tuple[torch.Tensor, torch.Tensor]:
        length, angle = trial_length[trials, None, None] * theta_e[image], trial_angle[trials, None, None]
        alpha = line_segment_deflection(x, y, 1.0, length, angle, centre_x[image], centre_y[image], core=core)
        return alpha[:, 0], alpha[:, 1]  # (trials, 2, n s, n s)

    return _Family(deflection, len(trial_angle), (len(half_lengths), angles), VortexScan)


class _Projection(NamedTuple):
    """What every template of one fit shares: the tangent basis ``(B, N, P)``, the residual projected off it ``(B,
    N)``, the noise per pixel ``(B, N)``, the source's gradient ``(B, 2, n s, n s)``, the PSF kernels and the
    supersampled grid's coordinates."""

    basis: torch.Tensor
    residual: torch.Tensor
    pixel_sigma: torch.Tensor
    gradient: torch.Tensor
    kernels: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    supersampling: int


def _projection(fit: LensFit, grid: PixelGrid, psf_truncation: float, fit_psf: bool, supersampling: int) -> _Projection:
    check_supersampling(supersampling)
    dtype = fit.model.dtype
    basis = tangent_basis(fit, grid, psf_truncation, fit_psf, supersampling).to(dtype)  # (B, N, P)
    residual = fit.normalised_residual.flatten(1)[..., None]
    residual = (residual - basis @ (basis.transpose(1, 2) @ residual))[..., 0]  # the smooth model refitted with it
    fine = grid.supersampled(supersampling)  # the templates' light is sampled there, then averaged per pixel
    kernels = gaussian_psf_kernels(fit.psf_fwhm, grid.pixel_scale, psf_truncation, dtype).to(residual.device)
    x, y = fine.coordinates(dtype, residual.device)
    gradient = _source_gradient(fit, fine).to(dtype)
    return _Projection(basis, residual, fit.pixel_sigma.flatten(1), gradient, kernels, x, y, supersampling)


def _template_scan(projection: _Projection, families: tuple[_Family, ...], chunk: int) -> tuple[NamedTuple, ...]:
    """Each family's delta chi^2 and best strength, one image at a time and ``chunk`` trials per batch: the image
    change of each unit-strength deflection, ``-PSF * (grad S . alpha)``, with the residual and the template both
    projected off the tangent space (module docstring)."""
    p = projection
    batch, dtype = p.residual.shape[0], p.residual.dtype
    results = []
    for family in families:
        delta_chi2, strength = [], []
        for image in range(batch):
            gained, best = [], []
            for start in range(0, family.count, chunk):
                alpha_x, alpha_y = family.deflection(image, p.x, p.y, slice(start, start + chunk))
                lensed = -(p.gradient[image, 0] * alpha_x + p.gradient[image, 1] * alpha_y)
                lensed = bin_pixels(lensed, p.supersampling)
                template = convolve_psf(lensed[None], p.kernels[image : image + 1])[0].flatten(1)
                template = template / p.pixel_sigma[image]
                template = template - (template @ p.basis[image]) @ p.basis[image].T  # (chunk, N)
                overlap = template @ p.residual[image]
                norm = (template * template).sum(dim=1).clamp_min(torch.finfo(dtype).tiny)
                gained.append(torch.where(overlap > 0, overlap * overlap / norm, torch.zeros_like(overlap)))
                best.append(overlap / norm)
            delta_chi2.append(torch.cat(gained))
            strength.append(torch.cat(best))
        shape = (batch, *family.shape)
        results.append(family.wrap(torch.stack(delta_chi2).reshape(shape), torch.stack(strength).reshape(shape)))
    return tuple(results)


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
