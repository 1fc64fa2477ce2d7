"""The best pixelated source for a given lens: the semi-linear inversion of lens modelling (Warren & Dye 2003).

For a fixed lens the model image is linear in the source pixels ``s``: ``M s = PSF * (s traced through alpha)``
(:func:`~d4lenspinn.physics.ray_trace`'s bilinear interpolation, then :func:`~d4lenspinn.physics.convolve_psf`).
The source minimising

    chi^2(s) + lambda * |grad s|^2 = |(d - M s) / sigma|^2 + lambda * sum over neighbouring source pixels (s_i - s_j)^2

solves the normal equations ``(M^T M / sigma^2 + lambda D^T D) s = M^T d / sigma^2``, here by batched conjugate
gradients (``M^T`` by autograd's vector-Jacobian product, exact for this linear map). A source with any structure
(knots, clumps) that the lens maps consistently is absorbed; what a smooth lens cannot map consistently (a subhalo
moving one image of a source point and not its counter-images) stays in the residual ``(d - M s) / sigma``, the
gravitational-imaging residual (Koopmans 2005; Vegetti & Koopmans 2009). ``lambda`` is in units of the source's
brightness gradient: a prior that does not depend on the noise, so the data win where the signal-to-noise is high.

D4: the source grid is centred and square and the gradient prior sums squared differences over all neighbouring
pairs, so inverting ``g(image)`` through ``g(alpha)`` gives ``g(source)`` (tests/physics/test_source_inversion.py).

Example::

    inversion = invert_source(images - background, alpha, grid, source_grid, psf_kernel, sigma)
    inversion.normalised_residual          # (B, 1, n, n): what no source explains through this lens, in sigma
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .grid import PixelGrid, check_field
from .lens_mapping import ray_trace
from .light import convolve_psf

__all__ = ["SourceInversion", "invert_source", "DEFAULT_REGULARISATION"]

DEFAULT_REGULARISATION = 100.0  # lambda: a source-gradient scale of 0.1 (image units per source pixel)
_RIDGE = 1e-6  # relative to lambda: fixes the source far from every ray (no data, constant under the gradient prior)


class SourceInversion(NamedTuple):
    source: torch.Tensor  # (B, 1, m, m) on the source grid, image units
    model: torch.Tensor  # (B, 1, n, n) M source
    normalised_residual: torch.Tensor  # (B, 1, n, n) (data - model) / sigma
    reduced_chi2: torch.Tensor  # (B,) sum(residual^2) / pixels
    relative_residual: torch.Tensor  # (B,) |normal-equation residual| / |right-hand side| after the iterations


def _gradient_energy_operator(source: torch.Tensor) -> torch.Tensor:
    """``D^T D s``: the negative graph Laplacian of the 4-neighbour grid (free boundary), ``(B, 1, m, m)``."""
    dx = source[..., :, 1:] - source[..., :, :-1]
    dy = source[..., 1:, :] - source[..., :-1, :]
    out = torch.zeros_like(source)
    out[..., :, 1:] += dx
    out[..., :, :-1] -= dx
    out[..., 1:, :] += dy
    out[..., :-1, :] -= dy
    return out


def invert_source(
    data: torch.Tensor,
    alpha: torch.Tensor,
    grid: PixelGrid,
    source_grid: PixelGrid,
    psf_kernel: torch.Tensor,
    sigma: torch.Tensor,
    regularisation: float = DEFAULT_REGULARISATION,
    iterations: int = 50,
) -> SourceInversion:
    """Regularised least-squares source for ``data (B, 1, n, n)`` (background removed) through the deflection
    ``alpha (B, 2, n, n)`` [arcsec] on ``grid``, on ``source_grid``, with the PSF ``psf_kernel`` (``(K,)`` or
    ``(B, K)``, as :func:`convolve_psf`) and the noise ``sigma (B,)`` in image units; ``iterations`` steps of
    conjugate gradients from a zero source. Runs in ``data``'s dtype, without gradients (a measurement of the
    image: nothing is trained through it)."""
    check_field(data, "data", 1, grid)
    check_field(alpha, "alpha", 2, grid)
    if sigma.shape != (data.shape[0],) or not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be a ({data.shape[0]},) tensor of values > 0, got shape {tuple(sigma.shape)}")
    if not regularisation > 0 or iterations < 1:
        raise ValueError(f"need regularisation > 0 and iterations >= 1, got {regularisation}, {iterations}")
    weight = (1 / sigma).reshape(-1, 1, 1, 1).to(data)
    shape = (data.shape[0], 1, source_grid.n, source_grid.n)

    def forward(source: torch.Tensor) -> torch.Tensor:
        return convolve_psf(ray_trace(source, alpha, grid, source_grid), psf_kernel) * weight

    data, alpha = data.detach(), alpha.detach()
    with torch.enable_grad():  # the map is linear: its vector-Jacobian product at 0 is the adjoint everywhere
        probe = data.new_zeros(shape).requires_grad_(True)
        mapped = forward(probe)

    def adjoint(image: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(mapped, probe, image, retain_graph=True)[0]

    with torch.no_grad():
        return _conjugate_gradients(data, weight, forward, adjoint, regularisation, iterations)


def _conjugate_gradients(data, weight, forward, adjoint, regularisation, iterations) -> SourceInversion:
    def normal(source: torch.Tensor) -> torch.Tensor:
        return adjoint(forward(source)) + regularisation * (_gradient_energy_operator(source) + _RIDGE * source)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(1, 2, 3), keepdim=True)

    rhs = adjoint(data * weight)
    source, residual = torch.zeros_like(rhs), rhs
    direction, rr = residual, dot(residual, residual)
    tiny = torch.finfo(data.dtype).tiny
    for _ in range(iterations):
        step_image = normal(direction)
        step = rr / dot(direction, step_image).clamp_min(tiny)
        source = source + step * direction
        residual = residual - step * step_image
        rr_new = dot(residual, residual)
        direction = residual + (rr_new / rr.clamp_min(tiny)) * direction
        rr = rr_new
    model = forward(source) / weight
    normalised = (data - model) * weight
    pixels = data.shape[-1] * data.shape[-2]
    relative = (rr.sqrt() / dot(rhs, rhs).sqrt().clamp_min(tiny)).flatten()
    return SourceInversion(source, model, normalised, normalised.square().sum(dim=(1, 2, 3)) / pixels, relative)
