"""The square pixel grid shared by images, convergence maps and deflection fields.

Pixel centres are symmetric about the origin: ``x[j] = (j - (n - 1) / 2) * pixel_scale`` for column ``j`` and
``y[i] = (i - (n - 1) / 2) * pixel_scale`` for row ``i`` (arcsec). With this convention the D4 actions of
:mod:`d4lenspinn.symmetry` are exact point maps of the plane for odd and even ``n`` alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["PixelGrid", "check_field", "check_supersampling", "bin_pixels"]


@dataclass(frozen=True)
class PixelGrid:
    """A square grid of ``n x n`` pixels of side ``pixel_scale`` arcsec, centred on the optical axis.

    Example::

        grid = PixelGrid(150, 0.05)        # the DeepLense Model I grid: 7.5" across
        x, y = grid.x, grid.y              # (150, 150) float32 tensors, arcsec
    """

    n: int
    pixel_scale: float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ValueError(f"PixelGrid.n must be an integer number of pixels >= 2, got {self.n!r}")
        if (
            not (isinstance(self.pixel_scale, (int, float)) and math.isfinite(self.pixel_scale))
            or self.pixel_scale <= 0
        ):
            raise ValueError(f"PixelGrid.pixel_scale must be a finite positive arcsec value, got {self.pixel_scale!r}")
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))

    @property
    def half_extent(self) -> float:
        """Coordinate of the outermost pixel centres, ``(n - 1) / 2 * pixel_scale`` (arcsec)."""
        return 0.5 * (self.n - 1) * self.pixel_scale

    @property
    def field_of_view(self) -> float:
        """Edge-to-edge width of the grid, ``n * pixel_scale`` (arcsec)."""
        return self.n * self.pixel_scale

    def axis(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """Pixel-centre coordinates along one axis, shape ``(n,)``, arcsec."""
        idx = torch.arange(self.n, dtype=torch.float64, device=device)
        return ((idx - 0.5 * (self.n - 1)) * self.pixel_scale).to(dtype)

    def coordinates(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` coordinate maps, each ``(n, n)``, arcsec; ``x`` varies along columns, ``y`` along rows."""
        a = self.axis(dtype, device)
        y, x = torch.meshgrid(a, a, indexing="ij")
        return x, y

    @property
    def x(self) -> torch.Tensor:
        """x coordinate of every pixel centre, ``(n, n)`` float32, arcsec."""
        return self.coordinates()[0]

    @property
    def y(self) -> torch.Tensor:
        """y coordinate of every pixel centre, ``(n, n)`` float32, arcsec."""
        return self.coordinates()[1]

    def scaled(self, factor: float, n: int | None = None) -> PixelGrid:
        """A grid ``factor`` times wider with the same pixel count (or ``n`` pixels); e.g. an enlarged source plane."""
        n = self.n if n is None else n
        return PixelGrid(n, self.field_of_view * factor / n)

    def supersampled(self, factor: int) -> PixelGrid:
        """The ``factor x factor`` sub-pixel centres of every pixel, ``n * factor`` pixels of ``pixel_scale /
        factor`` (the same field; :func:`bin_pixels` averages a field on it back to this grid)."""
        return PixelGrid(self.n * factor, self.pixel_scale / factor)


def check_supersampling(factor: int) -> None:
    """Raise ``ValueError`` unless ``factor`` is an integer >= 1 (sub-pixels per pixel along each axis)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"supersampling must be an integer >= 1 (sub-pixels per pixel and axis), got {factor!r}")


def bin_pixels(field: torch.Tensor, factor: int) -> torch.Tensor:
    """The mean over each ``factor x factor`` block of ``field (..., n * factor, n * factor)``: what a detector
    pixel records of light sampled at :meth:`PixelGrid.supersampled` centres (a no-op for ``factor`` 1). Commutes
    with the D4 actions, since the blocks are mapped to blocks."""
    if factor == 1:
        return field
    *lead, rows, columns = field.shape
    blocks = field.reshape(*lead, rows // factor, factor, columns // factor, factor)
    return blocks.mean(dim=(-3, -1))


def check_field(tensor: torch.Tensor, name: str, channels: int | None, grid: PixelGrid | None = None) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a floating ``(B, channels, n, n)`` map on ``grid``.

    ``channels=None`` accepts any channel count.
    """
    expected = f"(B, {'C' if channels is None else channels}, H, W)"
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(tensor).__name__}")
    shape = tuple(tensor.shape)
    if tensor.dim() != 4 or (channels is not None and shape[1] != channels):
        raise ValueError(f"{name} must have shape {expected}, got {shape}")
    if shape[2] != shape[3]:
        raise ValueError(f"{name} must be square (H == W), got {shape}")
    if grid is not None and shape[2] != grid.n:
        raise ValueError(f"{name} has {shape[2]}x{shape[3]} pixels but the grid has {grid.n}x{grid.n}: {shape}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32 or float64), got {tensor.dtype}")
