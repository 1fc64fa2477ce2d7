"""Fit the smooth lens (SIE + shear) and a Sersic source to each image: batched Levenberg-Marquardt.

The lens modeller's first step, batched and differentiable::

    fit = fit_smooth_lens(images, init, PixelGrid(64, 0.101), psf_fwhm=0.16, psf_truncation=5.0, steps=10)
    fit.macro, fit.source            # refined MacroLens and SersicSource, (B,) tensors
    fit.normalised_residual          # (images - fit.model) / fit.pixel_sigma, (B, 1, n, n): what it cannot explain
    fit.reduced_chi2, fit.failed     # (B,), (B,) bool

Model: ``image = amplitude * PSF * S(theta - alpha(theta)) + background`` (:func:`render_lensed_sersic`; with
``supersampling=s`` the lensed light is averaged over ``s x s`` points per pixel before the PSF), with the
amplitude and the constant background (min-max normalised images have an offset) solved linearly for every trial of
the 13 nonlinear parameters (variable projection, Golub & Pereyra 1973); with ``shapelets=n_max`` the source gains
the shapelets of order ``<= n_max`` about its centre (:mod:`~d4lenspinn.physics.shapelets`), whose coefficients are
solved linearly too, as lens modellers add them for clumpy galaxies. Those are packed as ``[log theta_e, e1, e2,
center_x, center_y, gamma1, gamma2, log radius, log n, source e1, e2, x, y]``, and ``log psf_fwhm`` when the PSF
width is fitted too (``fit_psf=True``); positivity by the logarithms, and after each step a projection onto a box
that keeps the model finite (|e| <= 0.8, |gamma| <= 0.5, centres inside the field, theta_e, radius and n within wide
bounds, the PSF width within a factor ``PSF_RANGE`` of its start). The Jacobian of the residual is exact, by
forward-mode autodiff (:func:`_jacobian`). Each step solves ``(J^T J + lambda diag(J^T J)) delta = -J^T r``
(Marquardt 1963) and keeps the trial only where chi^2 decreases, per image (lambda / 3 on success, x 10 on failure).

Why it is D4-equivariant: D4 maps the packed parameters by a signed permutation (centres are vectors, ellipticity
and shear spin-2, the rest invariant), chi^2 is invariant, the Marquardt diagonal and the box commute with signed
permutations, the start (:func:`initial_source`) is equivariant, a :class:`StartGrid`'s candidates are a set D4 maps
to itself, ranked (before and after trial steps) by the invariant chi^2, and the shapelets' span is mapped to itself. So
fitting ``g(image)`` from ``g(init)`` gives ``g(fit)`` up to round-off (tests/physics/test_lens_fit.py, all 8
elements).

Gradients: with ``gradients=True`` the steps are unrolled in autograd with the Jacobian held constant (the standard
approximation; the gradient flows through every residual, linear solve and update); ``gradients=False`` runs the fit
without a graph, for inference or when the fitted lens is only a target (benchmarks/fit.py measures both).
"""

from __future__ import annotations

import math
from itertools import product
from numbers import Real
from typing import NamedTuple

import torch

from .grid import PixelGrid, bin_pixels, check_field, check_supersampling
from .light import FWHM_PER_SIGMA, convolve_psf, gaussian_psf_kernel, gaussian_psf_kernels, gaussian_taps
from .macro import MacroLens, check_macro
from .noise import estimate_noise, shot_noise_fraction
from .shapelets import shapelet_basis, shapelet_order
from .smooth_lens import SersicSource, sersic_at, source_plane
from .source_moments import initial_source

__all__ = ["LensFit", "StartGrid", "centred_lens", "check_shot_noise", "fit_smooth_lens", "tangent_basis"]

_LENS, _SOURCE = 7, 6  # nonlinear parameters of the lens and the source
MAX_ELLIPTICITY, MAX_SHEAR = 0.8, 0.5  # |e| and |gamma| of the fit's box
_N_RANGE = (0.3, 8.0)  # Sersic index
PSF_RANGE = 2.0  # a fitted PSF width stays within this factor of the width it starts from
_LAMBDA_START, _LAMBDA_DOWN, _LAMBDA_UP, _LAMBDA_RANGE = 1e-2, 1 / 3, 10.0, (1e-9, 1e9)


class LensFit(NamedTuple):
    """Result of :func:`fit_smooth_lens`; every tensor has batch size ``B``."""

    macro: MacroLens  # fitted SIE + shear
    source: SersicSource  # fitted source (amplitude in image units)
    background: torch.Tensor  # (B,) constant sky level, image units
    model: torch.Tensor  # (B, 1, n, n) the smooth-lens image, background included
    sigma: torch.Tensor  # (B,) background noise level, image units
    psf_fwhm: torch.Tensor  # (B,) PSF width used [arcsec]: the one given, or the fitted one
    reduced_chi2: torch.Tensor  # (B,) sum(((image - model) / pixel_sigma)^2) / (pixels - parameters), all of them
    failed: torch.Tensor  # (B,) bool: no finite model was found; the entries hold the init and a flat model
    normalised_residual: torch.Tensor  # (B, 1, n, n) (images - model) / pixel_sigma: what the fit cannot explain
    shapelets: torch.Tensor  # (B, K) coefficients of the source's shapelets (image units); K = 0 without them
    pixel_sigma: torch.Tensor  # (B, 1, n, n) noise per pixel: sigma, or (shot_noise) sigma sqrt(1 + f light / peak)
    shot_fraction: torch.Tensor  # (B,) f: the source's shot-noise variance at its peak / sigma^2; 0 without shot noise

    def select(self, index: torch.Tensor) -> LensFit:
        """The fits of the images ``index`` (indices or a boolean mask over the batch)."""
        return LensFit(*(type(p)(*(v[index] for v in p)) if isinstance(p, tuple) else p[index] for p in self))


class StartGrid(NamedTuple):
    """Candidate starts around an init lens: ``theta_e_scales`` multiply theta_E, ``centre_shifts`` [pixels] move the
    centre along each axis (every pair of shifts: a square, so the candidate set is mapped to itself by D4). Each
    of ``ellipticities`` and ``shears`` adds, at every theta_E scale with the centre unshifted, the four starts that
    add ``(+-e, 0)`` and ``(0, +-e)`` to the init's ``(e1, e2)`` (or ``gamma``): D4 maps these four to each other, so
    the set stays its own image. The ``refined`` candidates of lowest chi^2 are each given ``trial_steps`` steps of
    the fit, and the one of lowest chi^2 after them goes on (a multi-start search: a candidate's chi^2 before any
    step, with a source guessed under it, does not tell the basins apart; a few steps do). The default is the init
    alone."""

    theta_e_scales: tuple[float, ...] = (1.0,)
    centre_shifts: tuple[float, ...] = (0.0,)
    refined: int = 1
    trial_steps: int = 0
    ellipticities: tuple[float, ...] = ()
    shears: tuple[float, ...] = ()

    @classmethod
    def over_prior(
        cls,
        theta_e_range: tuple[float, float],
        centre_shifts: tuple[float, ...] = (-2.0, 0.0, 2.0),
        ratio: float = 1.23,
        refined: int = 1,
        trial_steps: int = 0,
        ellipticities: tuple[float, ...] = (),
        shears: tuple[float, ...] = (),
    ) -> StartGrid:
        """Starts that need no estimate: used around :func:`centred_lens` (theta_E 1"), its scales are Einstein radii
        [arcsec] spaced evenly in log from ``theta_e_range[0]`` to ``[1]`` at most ``ratio`` apart; the other
        arguments are the fields of the same names."""
        low, high = theta_e_range
        if not 0 < low <= high or ratio <= 1:
            raise ValueError(
                f"theta_e_range must be 0 < low <= high [arcsec] and ratio > 1, got {theta_e_range}, {ratio}"
            )
        count = 1 + math.ceil(math.log(high / low) / math.log(ratio) - 1e-9)
        scales = (low,) if count == 1 else tuple(low * (high / low) ** (k / (count - 1)) for k in range(count))
        return cls(scales, tuple(centre_shifts), refined, trial_steps, tuple(ellipticities), tuple(shears))

    def check(self) -> None:
        """Raise ``ValueError`` unless ``refined`` is between 1 and the number of candidates, ``trial_steps`` an
        integer >= 0 and every ellipticity and shear offset in ``(0, 0.8]`` and ``(0, 0.5]`` (the fit's box)."""
        for name, offsets, limit in (
            ("ellipticities", self.ellipticities, MAX_ELLIPTICITY),
            ("shears", self.shears, MAX_SHEAR),
        ):
            if not isinstance(offsets, (tuple, list)) or not all(_in_range(v, 0, limit) and v > 0 for v in offsets):
                raise ValueError(f"{name} must be a tuple of offsets in (0, {limit}], got {offsets!r}")
        shaped = 4 * (len(self.ellipticities) + len(self.shears))
        count = len(self.theta_e_scales) * (len(self.centre_shifts) ** 2 + shaped)
        for name, value, low, high in (
            ("refined", self.refined, 1, count),
            ("trial_steps", self.trial_steps, 0, math.inf),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")

    def candidates(self, lens: MacroLens, pixel_scale: float):
        """The init first, then every other combination of scale and shifts, then the ellipticity and shear
        offsets, as ``MacroLens`` of ``(B,)`` tensors."""
        combos = [(a, dx, dy) for a in self.theta_e_scales for dx in self.centre_shifts for dy in self.centre_shifts]
        combos.sort(key=lambda c: c != (1.0, 0.0, 0.0))
        for scale, dx, dy in combos:
            yield lens._replace(
                theta_e=lens.theta_e * scale,
                center_x=lens.center_x + dx * pixel_scale,
                center_y=lens.center_y + dy * pixel_scale,
            )
        for scale in self.theta_e_scales:
            for pair, offsets in (("e1", "e2"), self.ellipticities), (("gamma1", "gamma2"), self.shears):
                for offset in offsets:
                    for field, sign in product(pair, (1, -1)):
                        shifted = {field: getattr(lens, field) + sign * offset}
                        yield lens._replace(theta_e=lens.theta_e * scale, **shifted)


class _Problem(NamedTuple):
    """What the residual depends on besides the parameters."""

    images: torch.Tensor  # (B, N) flattened
    inverse_sigma: torch.Tensor  # (B, 1), or (B, N) per pixel
    grid: PixelGrid
    kernel: torch.Tensor | None  # (K,) PSF, or (B, K): one per image; None: the width is the last parameter
    psf_reach: int  # taps each side of a fitted PSF kernel (its widest allowed width, truncated)
    log_fwhm_bounds: tuple[float, float]  # box of a fitted log PSF width [log arcsec]
    shapelet_order: int | None  # n_max of the source's shapelets, None: the Sersic profile alone
    supersampling: int  # sub-pixels per pixel and axis at which the light is sampled, then averaged per pixel


def _in_range(value, low: float, high: float) -> bool:
    """Whether ``value`` is a real number (not a bool) in ``[low, high]``."""
    return isinstance(value, Real) and not isinstance(value, bool) and low <= value <= high


def centred_lens(batch: int, dtype: torch.dtype = torch.float32, device=None) -> MacroLens:
    """A round, unsheared lens of theta_E 1" at the field's centre, ``(batch,)`` tensors: D4-invariant, the init of
    :meth:`StartGrid.over_prior`."""
    zero = torch.zeros(batch, dtype=dtype, device=device)
    return MacroLens(torch.ones_like(zero), *([zero] * 6))


def pack_lens(macro: MacroLens) -> torch.Tensor:
    """The lens as the fit's ``(B, 7)`` parameters ``[log theta_e, e1, e2, center_x, center_y, gamma1, gamma2]``."""
    return torch.stack((macro.theta_e.log(), *macro[1:]), dim=1)


def unpack_lens(u: torch.Tensor) -> MacroLens:
    """The lens of the first 7 packed parameters of ``u (B, >= 7)``."""
    return MacroLens(u[:, 0].exp(), *u[:, 1:_LENS].unbind(dim=1))


def clamp_lens(columns: list[torch.Tensor], grid: PixelGrid) -> list[torch.Tensor]:
    """The packed lens columns ``columns[:7]`` moved into the box that keeps the model finite (theta_E between 2
    pixels and the field's width, |e| <= 0.8, |gamma| <= 0.5, the centre inside the field); the rest unchanged.
    Commutes with D4's signed permutations (radial clamps of the spin-2 pairs, a square box for the centre)."""
    half, step = grid.half_extent, grid.pixel_scale
    columns = list(columns)
    columns[0] = columns[0].clamp(math.log(2 * step), math.log(2 * half))
    for first, limit in ((1, MAX_ELLIPTICITY), (5, MAX_SHEAR)):
        columns[first], columns[first + 1] = _radial_clamp(columns[first], columns[first + 1], limit)
    for index in (3, 4):
        columns[index] = columns[index].clamp(-half, half)
    return columns


def _radial_clamp(a: torch.Tensor, b: torch.Tensor, limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (limit / torch.sqrt(a * a + b * b).clamp_min(limit)).clamp_max(1)
    return a * scale, b * scale


def damped_step(jacobian: torch.Tensor, residual: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
    """The Levenberg-Marquardt step ``(B, P)`` (float64) solving ``(J^T J + lambda diag(J^T J)) delta = -J^T r`` for
    ``jacobian (B, N, P)``, ``residual (B, N)`` and ``damping (B,)``; a tiny floor keeps flat directions solvable."""
    jacobian = jacobian.double()
    normal = jacobian.transpose(1, 2) @ jacobian  # (B, P, P)
    gradient = (jacobian.transpose(1, 2) @ residual.double().unsqueeze(-1)).squeeze(-1)  # carries the graph
    diagonal = normal.diagonal(dim1=1, dim2=2)
    floor = 1e-12 * diagonal.amax(dim=1, keepdim=True).clamp_min(1e-300)
    damped = normal + torch.diag_embed(damping[:, None] * diagonal.clamp_min(floor) + floor)
    return -torch.linalg.solve(damped, gradient)


def start_damping(chi2: torch.Tensor) -> torch.Tensor:
    """Marquardt's lambda at the start, one per image of ``chi2 (B,)``, float64."""
    return torch.full_like(chi2, _LAMBDA_START, dtype=torch.float64)


def next_damping(better: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
    """Marquardt's schedule per image: lambda / 3 after an accepted step, x 10 after a rejected one, within bounds."""
    low, high = _LAMBDA_RANGE
    return torch.where(better, damping * _LAMBDA_DOWN, damping * _LAMBDA_UP).clamp(low, high)


def _unpack(u: torch.Tensor) -> tuple[MacroLens, SersicSource]:
    """Packed ``(B, 13)`` or ``(B, 14)`` nonlinear parameters -> lens and unit-amplitude source."""
    s = u[:, _LENS : _LENS + _SOURCE]
    source = SersicSource(torch.ones_like(s[:, 0]), s[:, 0].exp(), s[:, 1].exp(), *s[:, 2:].unbind(dim=1))
    return unpack_lens(u), source


def _pack(macro: MacroLens, source: SersicSource) -> torch.Tensor:
    shape = torch.stack((source.radius.log(), source.n.log(), source.e1, source.e2, source.x, source.y), dim=1)
    return torch.cat((pack_lens(macro), shape), dim=1)


def _linear_solution(components: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``coefficients (B, M)`` and ``background (B, 1)`` of ``images (B, N) ~ coefficients @
    components (B, M, N) + background``, in the images' dtype: the components are centred (which solves the
    background), scaled to unit norm and the normal equations solved in float64 with a ridge of 1e-10 of their
    diagonal (the Sersic profile and the lowest shapelet are nearly parallel)."""
    component_mean, image_mean = components.mean(dim=2, keepdim=True), images.mean(dim=1, keepdim=True)
    centred = (components - component_mean).double()
    norm = centred.norm(dim=2).clamp_min(torch.finfo(torch.float64).tiny)  # (B, M)
    scaled = centred / norm[..., None]
    ridge = 1e-10 * torch.eye(scaled.shape[1], dtype=torch.float64, device=scaled.device)
    normal = scaled @ scaled.transpose(1, 2) + ridge
    projection = scaled @ (images - image_mean).double()[..., None]  # (B, M, 1)
    coefficients = (torch.linalg.solve(normal, projection)[..., 0] / norm).to(images.dtype)
    background = image_mean - (coefficients[..., None] * component_mean).sum(dim=1)
    return coefficients, background


def _fitted_kernel(log_fwhm: torch.Tensor, problem: _Problem) -> torch.Tensor:
    """Gaussian PSF kernels ``(B, 2 * reach + 1)`` of widths ``exp(log_fwhm) (B,)`` [arcsec], differentiable in the
    width: the support is fixed (the widest allowed width, truncated), so a narrower kernel keeps its far tail
    (``exp(-t^2 / 2)`` of the peak beyond a truncation of ``t`` sigma) where :func:`gaussian_psf_kernels` cuts."""
    return gaussian_taps(log_fwhm.exp() / FWHM_PER_SIGMA / problem.grid.pixel_scale, problem.psf_reach)


def _components(u: torch.Tensor, problem: _Problem) -> torch.Tensor:
    """The source's light components seen through the lens and the PSF, ``(B, M, N)``: the unit-amplitude Sersic
    profile of the packed parameters, then (``shapelet_order``) the shapelets about its centre, of its radius; each
    sampled at the sub-pixel centres and averaged per pixel before the PSF."""
    lens, source = _unpack(u)
    beta_x, beta_y = source_plane(lens, problem.grid.supersampled(problem.supersampling))
    light = sersic_at(beta_x, beta_y, source)
    if problem.shapelet_order is not None:
        m = lambda v: v.reshape(-1, 1, 1)  # noqa: E731
        shapelets = shapelet_basis(beta_x - m(source.x), beta_y - m(source.y), m(source.radius), problem.shapelet_order)
        light = torch.cat((light, shapelets), dim=1)
    light = bin_pixels(light, problem.supersampling)
    kernel = problem.kernel if problem.kernel is not None else _fitted_kernel(u[:, -1], problem)
    return convolve_psf(light, kernel).flatten(2)


def _residual(u: torch.Tensor, problem: _Problem) -> torch.Tensor:
    """Noise-normalised residual ``(B, N)`` with the source's linear coefficients and the background solved."""
    components = _components(u, problem)
    coefficients, background = _linear_solution(components, problem.images)
    model = (coefficients[..., None] * components).sum(dim=1) + background
    return (problem.images - model) * problem.inverse_sigma


def _jacobian(u: torch.Tensor, problem: _Problem) -> torch.Tensor:
    """``d residual / d u`` ``(B, N, P)`` by forward-mode autodiff (``torch.func.jvp``, the P = 13 or 14 directions
    vectorised by ``vmap``); exact, and no graph. Central differences (26 renders in one batch) were no faster in the
    whole fit (64 px, float32, one CPU thread) and stalled on some images in float32. With shapelets every component
    carries its own tangent (order 4: 15x the Sersic fit's time); Kaufman's approximation (coefficients held) was 9x
    faster but stalled where the Sersic radius, which sets the shapelets' scale, shrank (the clumpy-source test)."""
    u = u.detach()
    directions = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)[:, None, :].expand(-1, u.shape[0], -1)
    with torch.no_grad():
        column = lambda t: torch.func.jvp(lambda v: _residual(v, problem), (u,), (t,))[1]  # noqa: E731
        return torch.func.vmap(column)(directions).permute(1, 2, 0)


def _project(u: torch.Tensor, problem: _Problem) -> torch.Tensor:
    """The nearest parameters inside the box that keeps the model finite; commutes with D4's signed permutations."""
    half, step = problem.grid.half_extent, problem.grid.pixel_scale
    columns = clamp_lens(list(u.unbind(dim=1)), problem.grid)
    for index, (low, high) in {_LENS: (0.2 * step, 2 * half), _LENS + 1: _N_RANGE}.items():
        columns[index] = columns[index].clamp(math.log(low), math.log(high))
    if problem.kernel is None:  # the PSF width: D4-invariant
        columns[-1] = columns[-1].clamp(*problem.log_fwhm_bounds)
    columns[_LENS + 2], columns[_LENS + 3] = _radial_clamp(columns[_LENS + 2], columns[_LENS + 3], MAX_ELLIPTICITY)
    for index in (_LENS + 4, _LENS + 5):  # the source centre: a square box is mapped to itself by D4
        columns[index] = columns[index].clamp(-half, half)
    return torch.stack(columns, dim=1)


def _levenberg_marquardt_step(u, residual, chi2, damping, problem):
    """One damped Gauss-Newton step per image, kept where chi^2 decreases; returns the four updated states."""
    delta = damped_step(_jacobian(u, problem), residual, damping)
    trial = _project(u + delta.to(u.dtype), problem)
    trial_residual = _residual(trial, problem)
    trial_chi2 = (trial_residual * trial_residual).sum(dim=1)
    better = torch.isfinite(trial_chi2) & (trial_chi2 < chi2) & torch.isfinite(delta).all(dim=1)
    damping = next_damping(better, damping)
    keep = better[:, None]
    return (
        torch.where(keep, trial, u),
        torch.where(keep, trial_residual, residual),
        torch.where(better, trial_chi2, chi2),
        damping,
    )


def fit_smooth_lens(
    images: torch.Tensor,
    init: MacroLens,
    grid: PixelGrid,
    psf_fwhm: float | torch.Tensor,
    psf_truncation: float = 4.0,
    steps: int = 10,
    sigma: torch.Tensor | None = None,
    gradients: bool = True,
    starts: StartGrid | None = None,
    fit_psf: bool = False,
    shapelets: int | None = None,
    supersampling: int = 1,
    shot_noise: str | float | None = None,
) -> LensFit:
    """Fit SIE + shear + Sersic source to ``images (B, 1, n, n)`` from the lens ``init`` in ``steps`` steps.

    ``grid`` is the images' pixel grid; ``psf_fwhm`` [arcsec] (one width, or one per image ``(B,)``) and
    ``psf_truncation`` the Gaussian PSF as in :func:`render_smooth_lens`; with ``fit_psf`` the width is fitted too
    (a 14th, D4-invariant parameter), starting from ``psf_fwhm`` and kept within a factor ``PSF_RANGE`` of it.
    With ``shapelets = n_max`` the source is the Sersic profile plus the shapelets of order ``<= n_max`` about its
    centre, of its half-light radius (:func:`~d4lenspinn.physics.shapelets.shapelet_basis`), their coefficients
    solved linearly with its amplitude: a clumpy source is then fitted by the source, not by a wrong lens.
    ``supersampling = s`` samples the lensed light at ``s x s`` points per pixel and averages them, as a detector
    pixel integrates the light (lenstronomy's ``supersampling_factor``); 1 samples pixel centres, as the package's
    simulator renders; costs about ``s^2`` times the render. With ``shot_noise`` each pixel's noise is
    ``sigma sqrt(1 + f light / max(light))``, the background's plus the source's own (Poisson) shot noise: with the
    instrument's background noise ``sigma_b`` in electrons per pixel (``shot_noise=sigma_b``), ``f`` is each image's
    peak SNR over it, ``max(light) / (sigma sigma_b)``; with ``shot_noise="fit"`` it is found from the residual
    (:func:`~d4lenspinn.physics.noise.shot_noise_fraction`), which also absorbs misfit, the substructure's included.
    Either is computed after the first half of the steps, to weigh the second half, and again after the last.
    ``sigma (B,)`` is the noise in image units (default :func:`estimate_noise`). The fit runs in the images' dtype
    and device (the normal equations in float64). The source starts from :func:`initial_source` under the projected
    init; with ``starts`` (:class:`StartGrid`) the start of each image is the candidate of lowest chi^2 among the
    init's theta_E scaled, its centre shifted and its ellipticity and shear offset (every candidate gets its own
    source start), which keeps a poor
    init out of the wrong local minimum; with ``starts.refined = R > 1`` the R best candidates are each fitted for
    the first ``starts.trial_steps`` steps (one start after the other, R times the cost of those steps) and
    the one of lowest chi^2 takes the rest (the shot noise is then weighed in after the trial steps at the
    earliest). Raises ``ValueError`` for malformed input or an image whose noise cannot be
    estimated; an image whose fit never reaches a finite chi^2 is flagged ``failed`` instead.
    """
    check_field(images, "images", 1, grid)
    check_macro(init, "init")
    batch = images.shape[0]
    if init.batch_size != batch:
        raise ValueError(f"init has {init.batch_size} lenses for {batch} images")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    widths = torch.as_tensor(psf_fwhm, dtype=torch.float64)
    if widths.shape not in ((), (batch,)):
        raise ValueError(f"psf_fwhm must be a number or a ({batch},) tensor, got shape {tuple(widths.shape)}")
    if not bool((widths > 0).all() and torch.isfinite(widths).all()) or psf_truncation <= 0:
        raise ValueError(f"psf_fwhm and psf_truncation must be finite and > 0, got {psf_fwhm}, {psf_truncation}")
    if shapelets is not None and (isinstance(shapelets, bool) or not isinstance(shapelets, int) or shapelets < 0):
        raise ValueError(f"shapelets must be None or an order n_max >= 0, got {shapelets!r}")
    check_supersampling(supersampling)
    check_shot_noise(shot_noise)
    starts = starts or StartGrid()
    starts.check()
    if not torch.isfinite(images).all():
        bad = (~torch.isfinite(images)).flatten(1).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"images {bad} hold non-finite pixels")
    if sigma is None:
        sigma = estimate_noise(images)
    elif sigma.shape != (batch,) or not bool((sigma > 0).all() and torch.isfinite(sigma).all()):
        raise ValueError(f"sigma must be a ({batch},) tensor of finite values > 0, got {sigma}")
    sigma = sigma.to(device=images.device, dtype=images.dtype)
    problem = _problem(images, sigma, grid, widths, psf_truncation, fit_psf, shapelets, supersampling)
    widths = widths.expand(batch).to(device=images.device, dtype=images.dtype)
    with torch.set_grad_enabled(gradients and torch.is_grad_enabled()):
        return _fit(images, init, widths, sigma, problem, steps, starts, shot_noise)


def check_shot_noise(shot_noise: str | float | None) -> None:
    """Raise ``ValueError`` unless ``shot_noise`` is None, ``"fit"`` or a background noise in electrons > 0."""
    if shot_noise is None or (isinstance(shot_noise, str) and shot_noise == "fit"):
        return
    if isinstance(shot_noise, bool) or not isinstance(shot_noise, (int, float)) or not 0 < shot_noise < math.inf:
        raise ValueError(
            f"shot_noise must be None, 'fit' or the background noise in electrons per pixel (> 0), got {shot_noise!r}"
        )


def _problem(images, sigma, grid, widths, truncation, fit_psf, shapelets, supersampling) -> _Problem:
    """The fit's fixed data (``sigma``: ``(B,)`` per image or ``(B, N)`` per pixel); a fixed PSF kernel, or
    (``fit_psf``) the support and box of a fitted width."""
    flat, inverse_sigma = images.flatten(1), 1 / (sigma[:, None] if sigma.dim() == 1 else sigma)
    if fit_psf:
        low, high = float(widths.min()) / PSF_RANGE, float(widths.max()) * PSF_RANGE
        reach = max(1, round(truncation * high / FWHM_PER_SIGMA / grid.pixel_scale))
        bounds = (math.log(low), math.log(high))
        return _Problem(flat, inverse_sigma, grid, None, reach, bounds, shapelets, supersampling)
    if widths.dim() == 0:
        kernel = gaussian_psf_kernel(float(widths), grid.pixel_scale, truncation, images.dtype)
    else:
        kernel = gaussian_psf_kernels(widths, grid.pixel_scale, truncation, images.dtype)
    return _Problem(flat, inverse_sigma, grid, kernel.to(images.device), 0, (0.0, 0.0), shapelets, supersampling)


def _ranked_starts(images, lens, widths, sigma, problem, starts) -> torch.Tensor:
    """Packed starts ``(B, R, 13 or 14)``: of the candidates of ``starts`` around ``lens``, the ``R =
    starts.refined`` of lowest chi^2 per image, lowest first (ties: in the candidates' order, the init first)."""
    packed, chi2 = [], []
    for candidate in starts.candidates(lens, problem.grid.pixel_scale):
        u = _pack(candidate, initial_source(images, candidate, problem.grid, sigma))
        if problem.kernel is None:
            u = torch.cat((u, widths.log()[:, None]), dim=1)
        u = _project(u, problem)
        residual = _residual(u, problem)
        packed.append(u)
        chi2.append(torch.nan_to_num((residual * residual).sum(dim=1), nan=math.inf))
    order = torch.stack(chi2, dim=1).argsort(dim=1, stable=True)[:, : starts.refined]  # (B, R)
    packed = torch.stack(packed, dim=1)  # (B, C, P)
    return packed.gather(1, order[..., None].expand(-1, -1, packed.shape[2]))


def _search(starts: torch.Tensor, problem: _Problem, steps: int):
    """``steps`` steps from each of the starts ``(B, R, P)`` in turn, then per image the state (``u``, residual,
    chi^2, damping) of lowest chi^2 (ties: the better start). One start at a time: a step of 64 images took 1.4x as
    long per image as one of 16 (64 px, 3 x 3 sub-pixels, one CPU thread beside other jobs)."""
    best = None
    for rank in range(starts.shape[1]):
        u = starts[:, rank]
        residual = _residual(u, problem)
        chi2 = (residual * residual).sum(dim=1)
        damping = start_damping(chi2)
        for _ in range(steps):
            u, residual, chi2, damping = _levenberg_marquardt_step(u, residual, chi2, damping, problem)
        state = (u, residual, chi2, damping)
        if best is not None:  # keep, per image, the state of lower chi^2
            better = torch.nan_to_num(chi2, nan=math.inf) < torch.nan_to_num(best[2], nan=math.inf)
            state = tuple(
                torch.where(better.reshape(-1, *[1] * (new.dim() - 1)), new, old)
                for new, old in zip(state, best, strict=True)
            )
        best = state
    return best


def _model(u: torch.Tensor, problem: _Problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The smooth model ``(B, N)`` of the packed parameters, its linear coefficients ``(B, M)`` and background
    ``(B, 1)``."""
    components = _components(u, problem)
    coefficients, background = _linear_solution(components, problem.images)
    return (coefficients[..., None] * components).sum(dim=1) + background, coefficients, background


def _fit(images, init, widths, sigma, problem, steps, starts, shot_noise) -> LensFit:
    dtype = images.dtype
    lens = MacroLens(*(value.to(device=images.device, dtype=dtype) for value in init))
    ranked = _ranked_starts(images, lens, widths, sigma, problem, starts)
    start, trials = ranked[:, 0], min(starts.trial_steps, steps)
    u, residual, chi2, damping = _search(ranked, problem, trials)
    fraction = torch.zeros_like(sigma)
    for step in range(trials, steps):
        if shot_noise is not None and step == max(1, steps // 2, trials):  # weigh the rest by each pixel's noise
            fraction, problem = _with_shot_noise(u, sigma, problem, shot_noise)
            residual = _residual(u, problem)
            chi2 = (residual * residual).sum(dim=1)
        u, residual, chi2, damping = _levenberg_marquardt_step(u, residual, chi2, damping, problem)
    # and the result by the noise about the final model; its weights are finite, so `failed` below stays as it was
    if shot_noise is not None:
        fraction, problem = _with_shot_noise(u, sigma, problem, shot_noise)

    failed = ~torch.isfinite(chi2)
    u = torch.where(failed[:, None], start.detach(), u)
    model, coefficients, background = _model(u, problem)
    flat = problem.images.mean(dim=1, keepdim=True).expand_as(model)
    model = torch.where(failed[:, None] | ~torch.isfinite(model), flat, model)
    coefficients = torch.where(failed[:, None], torch.zeros_like(coefficients), coefficients)
    background = torch.where(failed[:, None], flat[:, :1], background)
    inverse_sigma = problem.inverse_sigma.expand_as(model)
    inverse_sigma = torch.where(failed[:, None] | ~torch.isfinite(inverse_sigma), 1 / sigma[:, None], inverse_sigma)
    pixels, linear = model.shape[1], coefficients.shape[1] + 1
    normalised = (problem.images - model) * inverse_sigma
    macro, source = _unpack(u)
    return LensFit(
        macro=macro,
        source=source._replace(amplitude=coefficients[:, 0]),
        background=background[:, 0],
        model=model.reshape(images.shape),
        sigma=sigma,
        psf_fwhm=u[:, -1].exp() if problem.kernel is None else widths,
        reduced_chi2=normalised.square().sum(dim=1) / (pixels - u.shape[1] - linear),
        failed=failed,
        normalised_residual=normalised.reshape(images.shape),
        shapelets=coefficients[:, 1:],
        pixel_sigma=(1 / inverse_sigma).reshape(images.shape),
        shot_fraction=torch.where(failed, torch.zeros_like(fraction), fraction),
    )


def _with_shot_noise(u: torch.Tensor, sigma: torch.Tensor, problem: _Problem, shot_noise: str | float):
    """The shot-noise fraction ``f (B,)`` about the model of ``u`` (``"fit"``: :func:`shot_noise_fraction` of the
    residual; a background noise ``sigma_b`` in electrons: the model's peak SNR over it, ``max(light) / (sigma
    sigma_b)``) and the problem reweighted by it: each pixel's noise ``sigma sqrt(1 + f light / max(light))``, held
    fixed from here (images without a finite model keep ``sigma``)."""
    model, _, background = _model(u, problem)
    light = model - background
    peak = light.amax(dim=1)
    if shot_noise == "fit":
        fraction = shot_noise_fraction(problem.images - model, light, sigma)
    else:
        fraction = peak.clamp_min(0) / (sigma * shot_noise)
    fraction = torch.where(torch.isfinite(light).all(dim=1), fraction, torch.zeros_like(fraction))
    relative = light.clamp_min(0) / peak[:, None].clamp_min(torch.finfo(light.dtype).tiny)
    variance = sigma[:, None] ** 2 * (1 + fraction[:, None] * torch.nan_to_num(relative))
    return fraction.detach(), problem._replace(inverse_sigma=variance.detach().rsqrt())


def tangent_basis(
    fit: LensFit, grid: PixelGrid, psf_truncation: float = 4.0, fit_psf: bool = True, supersampling: int = 1
) -> torch.Tensor:
    """Orthonormal basis ``(B, N, P)`` (float64, N = n^2 pixels, P <= 16 + shapelets) of the directions in which the
    smooth model of ``fit`` can change, in units of the fit's noise per pixel: the derivatives of the lensed,
    PSF-convolved source in the 7 lens and 6 source-shape parameters (and the log PSF width with ``fit_psf``), the
    source's linear components and the background. ``fit`` must come from :func:`fit_smooth_lens` with this
    ``grid``, ``psf_truncation``, ``fit_psf`` and ``supersampling`` (the shapelet order is read from
    ``fit.shapelets``). Directions the others span to 1e-9 are dropped (their columns are zero). Raises
    ``ValueError`` for a failed fit."""
    if fit.failed.any():
        raise ValueError(f"fits {fit.failed.nonzero().flatten().tolist()} failed: no tangent space to project onto")
    order = shapelet_order(fit.shapelets.shape[1])
    model = fit.model.double()
    check_supersampling(supersampling)
    widths = fit.psf_fwhm.double()
    sigma = fit.pixel_sigma.flatten(1).to(model)
    problem = _problem(model, sigma, grid, widths, psf_truncation, fit_psf, order, supersampling)
    u = _pack(fit.macro, fit.source).to(model)
    if fit_psf:
        u = torch.cat((u, fit.psf_fwhm.log().to(model)[:, None]), dim=1)
    # At the fit's own model the residual is zero, so the variable-projection Jacobian is the tangent of the full
    # model projected off the linear components; those components and the constant complete the basis.
    components = _components(u, problem)
    constant = torch.ones_like(components[:, :1])
    basis = torch.cat((components, constant), dim=1).transpose(1, 2) * problem.inverse_sigma[..., None]
    basis = torch.cat((basis, _jacobian(u, problem)), dim=2)
    basis = basis / basis.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    left, singular, _ = torch.linalg.svd(basis, full_matrices=False)
    return left * (singular > 1e-9 * singular[:, :1])[:, None, :]
