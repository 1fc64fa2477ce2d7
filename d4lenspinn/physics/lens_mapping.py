"""Both directions of the lens equation ``beta = theta - alpha(theta)`` on pixel grids (angles in arcsec).

* :func:`ray_trace` (source -> image): ``image(theta) = source(theta - alpha(theta))`` by bilinear interpolation.
* :func:`inverse_lens` (image -> source): every image pixel is mapped to ``beta`` and its intensity is splatted
  bilinearly onto the source grid; each source pixel gets the weighted mean of the image pixels that land on it.

Both are differentiable with respect to the maps and to ``alpha``, and both commute exactly with D4 (bilinear
weights are symmetric under the axis flips and the axis swap). The source plane can be a different
:class:`~d4lenspinn.physics.PixelGrid` from the image plane, e.g. an enlarged one from
:func:`covering_source_grid`, as in the LensPINN inversion.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .grid import PixelGrid, check_field

__all__ = ["source_positions", "ray_trace", "inverse_lens", "SourceReconstruction", "covering_source_grid"]


def source_positions(alpha: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """``beta = theta - alpha(theta)`` for every image pixel, ``(B, 2, n, n)`` [arcsec]; ``alpha`` is ``(B,2,n,n)``."""
    check_field(alpha, "alpha", 2, grid)
    x, y = grid.coordinates(alpha.dtype, alpha.device)
    return torch.stack((x, y)) - alpha


def _match_batch(field: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if field.shape[0] == batch:
        return field
    if field.shape[0] == 1:
        return field.expand(batch, *field.shape[1:])
    raise ValueError(f"{name} has batch size {field.shape[0]} but alpha has {batch} (expected {batch} or 1)")


def ray_trace(
    source: torch.Tensor, alpha: torch.Tensor, grid: PixelGrid, source_grid: PixelGrid | None = None
) -> torch.Tensor:
    """Lensed image ``(B, C, n, n)`` of ``source (B or 1, C, m, m)`` on ``source_grid`` through ``alpha (B,2,n,n)``.

    Bilinear interpolation between source pixel centres; the source is zero outside its grid (light from there
    fades linearly to zero one pixel beyond the outermost pixel centre). ``source_grid`` defaults to ``grid``.
    """
    source_grid = grid if source_grid is None else source_grid
    check_field(source, "source", None, source_grid)
    beta = source_positions(alpha, grid)
    source = _match_batch(source, alpha.shape[0], "source")
    # grid_sample with align_corners=True puts -1 and +1 on the centres of the first and last pixels,
    # i.e. at -half_extent and +half_extent; its last axis is (x -> columns, y -> rows).
    sample_at = (beta / source_grid.half_extent).permute(0, 2, 3, 1).to(source.dtype)
    return F.grid_sample(source, sample_at, mode="bilinear", padding_mode="zeros", align_corners=True)


class SourceReconstruction(NamedTuple):
    """Output of :func:`inverse_lens`.

    ``source``: ``(B, C, m, m)`` weighted mean of the image pixels landing on each source pixel;
    ``weight``: ``(B, 1, m, m)`` total bilinear weight received (about the number of image pixels that land there;
    0 where none does, and there ``source`` is 0).
    """

    source: torch.Tensor
    weight: torch.Tensor


def inverse_lens(
    image: torch.Tensor,
    alpha: torch.Tensor,
    grid: PixelGrid,
    source_grid: PixelGrid | None = None,
    min_weight: float = 1e-2,
) -> SourceReconstruction:
    """Reconstruct the source plane from ``image (B, C, n, n)`` and ``alpha (B, 2, n, n)``.

    Each image pixel ``theta`` lands at ``beta = theta - alpha(theta)`` and gives its intensity to the four
    surrounding source pixels with bilinear weights. A source pixel's value is ``sum(w I) / max(sum(w), min_weight)``:
    the weighted mean wherever at least ``min_weight`` of an image pixel lands, fading continuously to exactly 0 where
    none does (``weight`` tells which pixels are covered). Light that lands outside ``source_grid`` is dropped;
    use :func:`covering_source_grid` for a plane large enough to hold all of it.
    """
    source_grid = grid if source_grid is None else source_grid
    check_field(image, "image", None, grid)
    if min_weight <= 0:
        raise ValueError(f"min_weight must be > 0, got {min_weight}")
    image = _match_batch(image, alpha.shape[0], "image")
    batch, channels, m = image.shape[0], image.shape[1], source_grid.n

    # Fractional source-pixel indices in float64: in float32, an index near 60 carries rounding of ~4e-6 pixel
    # that differs between mirrored pixels and would cost D4 equivariance of the weights.
    beta = source_positions(alpha.double(), grid)
    col = beta[:, 0] / source_grid.pixel_scale + 0.5 * (m - 1)  # (B, n, n)
    row = beta[:, 1] / source_grid.pixel_scale + 0.5 * (m - 1)
    col0, row0 = torch.floor(col).detach(), torch.floor(row).detach()
    tx = (col - col0).to(image.dtype).reshape(batch, 1, -1)
    ty = (row - row0).to(image.dtype).reshape(batch, 1, -1)
    # Splat onto the source grid plus a one-pixel border: clamping to the border sends every corner that falls
    # off the grid there, and the border is cropped away at the end.
    side = m + 2
    rows = [(row0 + d).clamp(-1, m).long().reshape(batch, 1, -1) + 1 for d in (0, 1)]
    cols = [(col0 + d).clamp(-1, m).long().reshape(batch, 1, -1) + 1 for d in (0, 1)]
    wy, wx = (1 - ty, ty), (1 - tx, tx)

    # channels 0..C-1 accumulate weighted intensities, channel C the weights themselves
    values = torch.cat((image.reshape(batch, channels, -1), torch.ones_like(tx)), dim=1)
    sums = image.new_zeros(batch, channels + 1, side * side)
    for i in (0, 1):
        for j in (0, 1):
            index = (rows[i] * side + cols[j]).expand(-1, channels + 1, -1)
            sums.scatter_add_(-1, index, (wy[i] * wx[j]) * values)
    sums = sums.reshape(batch, channels + 1, side, side)[..., 1:-1, 1:-1]
    numerator, weight = sums[:, :channels], sums[:, channels:]

    return SourceReconstruction(numerator / weight.clamp_min(min_weight), weight)


def covering_source_grid(alpha: torch.Tensor, grid: PixelGrid, n: int | None = None, margin: float = 1.0) -> PixelGrid:
    """Smallest centred grid of ``n`` pixels (default ``grid.n``) holding every ``beta`` of ``alpha`` plus ``margin``
    pixels, and never smaller than ``grid``. Not differentiable (it picks a size from the data)."""
    n = grid.n if n is None else n
    reach = float(source_positions(alpha, grid).detach().abs().max())
    # half_extent = (n - 1) / 2 * s must exceed reach + margin * s
    scale = max((reach / (0.5 * (n - 1) - margin)) if n > 2 * margin + 1 else float("inf"), grid.field_of_view / n)
    return PixelGrid(n, scale)
