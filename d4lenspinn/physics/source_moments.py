"""A first guess of the Sersic source behind an image, given a lens: the moments of the bright pixels mapped back.

Every pixel brighter than the background by ``threshold`` noise levels is traced to the source plane,
``beta = theta - alpha(theta)``, and weighted by its excess brightness times its area there, ``|det(d beta / d
theta)|`` (so a strongly magnified arc counts once, not once per image pixel). The weighted centroid is the source
centre; the second moments ``Q`` give the ellipticity ``(Q11 - Q22, 2 Q12) / (Q11 + Q22 + 2 sqrt(det Q))``, whose
size is ``(a - b) / (a + b)`` as the lenstronomy convention's ``(1 - q) / (1 + q)``, and the radius ``det(Q)^(1/4)``
(the geometric-mean rms width; an exponential profile's is 1.03 half-light radii). Only the lens needs an init.

Every step is D4-equivariant: the median, the threshold and the moments are, and the determinant is taken by centred
differences (one-sided at the border), which move with the grid.
"""

from __future__ import annotations

import torch

from .grid import PixelGrid
from .macro import MacroLens
from .smooth_lens import SersicSource, source_plane

__all__ = ["initial_source"]

_MAX_ELLIPTICITY = 0.5  # the guess stays moderate; the fit refines it


def initial_source(
    images: torch.Tensor, macro: MacroLens, grid: PixelGrid, sigma: torch.Tensor, threshold: float = 3.0
) -> SersicSource:
    """A Sersic source ``(B,)`` (index 1, amplitude 1: the fit solves it) from ``images (B, 1, n, n)`` under
    ``macro``, with the noise ``sigma (B,)`` in image units. An image without a pixel above the threshold gets a
    source at the origin of radius a tenth of the field."""
    beta_x, beta_y = source_plane(MacroLens(*(v.to(images.dtype) for v in macro)), grid)  # (B, n, n)
    step = grid.pixel_scale
    (dbx_dy, dbx_dx), (dby_dy, dby_dx) = (torch.gradient(b, spacing=step, dim=(-2, -1)) for b in (beta_x, beta_y))
    area = (dbx_dx * dby_dy - dbx_dy * dby_dx).abs()

    pixels = images[:, 0]
    excess = pixels - pixels.flatten(1).median(dim=1).values.reshape(-1, 1, 1)
    weight = torch.where(excess > threshold * sigma.reshape(-1, 1, 1), excess * area, torch.zeros_like(excess))
    total = weight.sum(dim=(-2, -1))
    found = total > 0
    norm = torch.where(found, total, torch.ones_like(total))
    mean = lambda field: (weight * field).sum(dim=(-2, -1)) / norm  # noqa: E731
    cx, cy = mean(beta_x), mean(beta_y)
    dx, dy = beta_x - cx.reshape(-1, 1, 1), beta_y - cy.reshape(-1, 1, 1)
    qxx, qyy, qxy = mean(dx * dx), mean(dy * dy), mean(dx * dy)
    root_det = (qxx * qyy - qxy * qxy).clamp_min(0).sqrt()
    denominator = (qxx + qyy + 2 * root_det).clamp_min(torch.finfo(images.dtype).tiny)
    e1, e2 = (qxx - qyy) / denominator, 2 * qxy / denominator
    shrink = (_MAX_ELLIPTICITY / torch.hypot(e1, e2).clamp_min(_MAX_ELLIPTICITY)).clamp_max(1)
    radius = root_det.sqrt().clamp_min(0.5 * step)

    zero, one = torch.zeros_like(cx), torch.ones_like(cx)
    fallback = lambda value, default: torch.where(found, value, default)  # noqa: E731
    return SersicSource(
        amplitude=one,
        radius=fallback(radius, 0.1 * grid.field_of_view * one),
        n=one,
        e1=fallback(e1 * shrink, zero),
        e2=fallback(e2 * shrink, zero),
        x=fallback(cx, zero),
        y=fallback(cy, zero),
    )
