"""Refine the smooth lens with a pixelated source: the lens of lowest penalised chi^2 of the semi-linear inversion.

A Sersic ellipse cannot explain a clumpy source, so a lens fitted with one (:func:`fit_smooth_lens`) is pulled off
by the knots. Lens-modelling codes fit the lens with a pixelated source instead (Warren & Dye 2003; Suyu et al. 2006):
for each trial lens the best source is a linear solve (:func:`invert_source`), and the lens minimises

    P(lens) = min_s |(d - M(lens) s) / sigma|^2 + lambda |grad s|^2

Each step here is a damped Gauss-Newton step in the 7 lens parameters (packed as the fit's, :func:`pack_lens`) with
the source held at its best for the current lens (variable projection with the source's own dependence on the lens
dropped from the Jacobian, the usual approximation). A source that moves with the lens makes that fixed-source
curvature too large and the plain step too short, so each step tries the step, then 4x and 16x it from wherever the
previous try left the lens (``_STEP_SCALES``); a try is kept, per image, only where P decreases, its source
re-solved. The Jacobian of the residual ``r = (d - PSF * s(theta - alpha)) / sigma`` at fixed ``s`` is

    dr / du_k = PSF * (grad s(beta) . d alpha / d u_k) / sigma

with ``grad s`` by central differences on the source grid, interpolated at ``beta = theta - alpha`` as the source is,
and ``d alpha / d u_k`` by forward-mode autodiff of the SIE + shear deflection (``grid_sample`` has none).

D4: the inversion is equivariant, ``grad s`` is a vector field on a square grid, the damped step and the box commute
with the lens parameters' signed permutations, so refining ``g(image)`` from ``g(lens)`` gives ``g(refined)``
(tests/physics/test_lens_refinement.py). Runs without gradients: a measurement of the image.

Example::

    fit = fit_smooth_lens(images, init, grid, psf_fwhm, truncation, fit_psf=True)
    kernels = gaussian_psf_kernels(fit.psf_fwhm, grid.pixel_scale, truncation)
    refined = refine_lens(images - fit.background.view(-1, 1, 1, 1), fit.macro, grid, source_grid, kernels, fit.sigma)
    refined.macro, refined.inversion.normalised_residual
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .grid import PixelGrid, check_field
from .lens_fit import clamp_lens, damped_step, next_damping, pack_lens, start_damping, unpack_lens
from .lens_mapping import ray_trace
from .light import convolve_psf
from .macro import MacroLens, check_macro, macro_deflection
from .source_inversion import DEFAULT_REGULARISATION, SourceInversion, invert_source

__all__ = ["LensRefinement", "refine_lens"]

_STEP_SCALES = (1.0, 4.0, 16.0)


class LensRefinement(NamedTuple):
    """Result of :func:`refine_lens`; every tensor has batch size ``B``."""

    macro: MacroLens  # the refined SIE + shear
    inversion: SourceInversion  # the pixelated source through it: source, model, normalised residual, chi^2
    penalised_chi2: torch.Tensor  # (B,) chi^2 + lambda |grad s|^2 of that inversion
    start_penalised_chi2: torch.Tensor  # (B,) the same through the lens it started from


def refine_lens(
    data: torch.Tensor,
    lens: MacroLens,
    grid: PixelGrid,
    source_grid: PixelGrid,
    psf_kernel: torch.Tensor,
    sigma: torch.Tensor,
    steps: int = 3,
    regularisation: float = DEFAULT_REGULARISATION,
    iterations: int = 50,
) -> LensRefinement:
    """Refine ``lens`` for ``data (B, 1, n, n)`` (background removed) in ``steps`` steps, each source inverted on
    ``source_grid`` with the PSF ``psf_kernel`` (``(K,)`` or ``(B, K)``), noise ``sigma (B,)``, ``regularisation``
    and ``iterations`` as :func:`invert_source`. Raises ``ValueError`` for malformed input."""
    check_field(data, "data", 1, grid)
    check_macro(lens, "lens")
    if lens.batch_size != data.shape[0]:
        raise ValueError(f"lens has {lens.batch_size} lenses for {data.shape[0]} images")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    with torch.no_grad():
        weight = (1 / sigma).reshape(-1, 1, 1, 1).to(data)
        u = pack_lens(MacroLens(*(value.to(data) for value in lens)))

        def solve(u: torch.Tensor) -> tuple[SourceInversion, torch.Tensor]:
            alpha = macro_deflection(unpack_lens(u), grid)
            inversion = invert_source(data, alpha, grid, source_grid, psf_kernel, sigma, regularisation, iterations)
            return inversion, _penalised_chi2(inversion, regularisation)

        inversion, objective = solve(u)
        start_objective = objective
        damping = start_damping(objective)
        for _ in range(steps):
            jacobian = _jacobian(u, inversion.source, grid, source_grid, psf_kernel, weight)
            delta = damped_step(jacobian, inversion.normalised_residual.flatten(1), damping)
            accepted = torch.zeros_like(objective, dtype=torch.bool)
            for scale in _STEP_SCALES:
                trial = torch.stack(clamp_lens(list((u + scale * delta.to(u.dtype)).unbind(dim=1)), grid), dim=1)
                trial_inversion, trial_objective = solve(trial)
                better = torch.isfinite(trial_objective) & (trial_objective < objective) & torch.isfinite(delta).all(1)
                accepted |= better
                u = torch.where(better[:, None], trial, u)
                kept = zip(trial_inversion, inversion, strict=True)
                inversion = SourceInversion(*(_where(better, new, old) for new, old in kept))
                objective = torch.where(better, trial_objective, objective)
            damping = next_damping(accepted, damping)
    return LensRefinement(unpack_lens(u), inversion, objective, start_objective)


def _where(condition: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(condition.reshape(-1, *([1] * (new.dim() - 1))), new, old)


def _penalised_chi2(inversion: SourceInversion, regularisation: float) -> torch.Tensor:
    """``chi^2 + lambda |grad s|^2`` ``(B,)``: the objective the inversion minimised, at its source."""
    source = inversion.source
    dx = source[..., :, 1:] - source[..., :, :-1]
    dy = source[..., 1:, :] - source[..., :-1, :]
    smoothness = dx.square().sum(dim=(1, 2, 3)) + dy.square().sum(dim=(1, 2, 3))
    return inversion.normalised_residual.square().sum(dim=(1, 2, 3)) + regularisation * smoothness


def _jacobian(u, source, grid, source_grid, psf_kernel, weight) -> torch.Tensor:
    """``d residual / d u`` ``(B, N, 7)`` at the fixed ``source (B, 1, m, m)``: see the module doc."""
    d_dy, d_dx = torch.gradient(source, spacing=source_grid.pixel_scale, dim=(-2, -1))  # rows are y
    alpha = macro_deflection(unpack_lens(u), grid)
    slope = ray_trace(torch.cat((d_dx, d_dy), dim=1), alpha, grid, source_grid)  # grad s at beta, (B, 2, n, n)
    directions = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)[:, None, :].expand(-1, u.shape[0], -1)

    def column(direction: torch.Tensor) -> torch.Tensor:
        tangent = torch.func.jvp(lambda v: macro_deflection(unpack_lens(v), grid), (u,), (direction,))[1]
        return (slope * tangent).sum(dim=1, keepdim=True)  # (B, 1, n, n)

    moved = torch.func.vmap(column)(directions)  # (7, B, 1, n, n)
    columns = [convolve_psf(image, psf_kernel) * weight for image in moved.unbind(0)]
    return torch.stack([image.flatten(1) for image in columns], dim=2)
