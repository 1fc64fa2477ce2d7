"""``LensingEngine``: the parameter-free physics layer of D4LensPINN as an ``nn.Module``.

It holds the Poisson-kernel spectra for one grid as a buffer (so they move with ``.to(device)``) and chains
convergence -> potential -> deflection -> source reconstruction -> re-lensed image. With a smooth macro lens
(:class:`~d4lenspinn.physics.MacroLens`, SIE + external shear) the convergence map is what the macro model lacks
(the substructure, of either sign): its potential and deflection from the FFT solver are added to the macro lens's
analytic ones. It has no learnable parameters (the macro parameters are inputs) and commutes with D4: transforming
``kappa``, ``image`` (and the macro lens, by :func:`~d4lenspinn.symmetry.transform_macro`) by ``g`` transforms every
output by ``g`` (``alpha`` as a vector field).

Example::

    engine = LensingEngine(PixelGrid(150, 0.05))
    out = engine(kappa, image)                      # kappa, image: (B, 1, 150, 150)
    out.alpha.shape                                 # (B, 2, 150, 150), arcsec
    out = engine(delta_kappa, image, macro)         # macro: MacroLens of (B,) tensors
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .grid import PixelGrid, check_field
from .lens_mapping import inverse_lens, ray_trace
from .macro import MacroLens, macro_deflection, macro_potential
from .poisson import kernel_spectra, potential_and_deflection

__all__ = ["LensingEngine", "LensingOutput", "MacroResidual"]


class LensingOutput(NamedTuple):
    """Everything the engine computes; shapes for ``B`` images of ``n x n`` pixels and a source grid of ``m x m``."""

    psi: torch.Tensor  # (B, 1, n, n) lensing potential [arcsec^2]
    alpha: torch.Tensor  # (B, 2, n, n) deflection [arcsec]
    source: torch.Tensor  # (B, C, m, m) reconstructed source (0 where no image pixel lands)
    source_weight: torch.Tensor  # (B, 1, m, m) image-pixel weight landing on each source pixel
    relensed: torch.Tensor  # (B, C, n, n) the reconstructed source ray-traced back to the image plane


class MacroResidual(NamedTuple):
    """What the smooth lens alone explains of an image ``(B, C, n, n)``."""

    relensed: torch.Tensor  # (B, C, n, n) the image, sent to the source plane and back through the macro lens alone
    spread: torch.Tensor  # (B, C, n, n) variance of the image pixels that share a source pixel, traced back


class LensingEngine(nn.Module):
    """Physics engine for images on ``grid``; the source plane is ``source_grid`` (default: the image grid)."""

    def __init__(self, grid: PixelGrid, source_grid: PixelGrid | None = None, min_weight: float = 1e-2) -> None:
        super().__init__()
        self.grid = grid
        self.source_grid = grid if source_grid is None else source_grid
        self.min_weight = min_weight
        # stored as real pairs: Module.to(dtype) casts real buffers but would drop the imaginary part of complex ones
        self.register_buffer("_spectra", torch.view_as_real(kernel_spectra(grid)).clone(), persistent=False)

    def potential_and_deflection(
        self, kappa: torch.Tensor, macro: MacroLens | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``psi (B,1,n,n)`` [arcsec^2] and ``alpha (B,2,n,n)`` [arcsec] of ``kappa (B,1,n,n)`` (FFT solver), plus
        those of the macro lens when given."""
        psi, alpha = potential_and_deflection(kappa, self.grid, torch.view_as_complex(self._spectra))
        if macro is None:
            return psi, alpha
        macro = _macro_like(macro, kappa, "kappa")
        return psi + macro_potential(macro, self.grid), alpha + macro_deflection(macro, self.grid)

    def forward(self, kappa: torch.Tensor, image: torch.Tensor, macro: MacroLens | None = None) -> LensingOutput:
        """Run the whole chain for ``kappa (B, 1, n, n)`` (with ``macro``: the convergence on top of the macro lens)
        and the observed ``image (B, C, n, n)``."""
        check_field(image, "image", None, self.grid)
        if image.shape[0] != kappa.shape[0]:
            raise ValueError(f"kappa and image need the same batch size, got {kappa.shape[0]} and {image.shape[0]}")
        psi, alpha = self.potential_and_deflection(kappa, macro)
        source, weight = inverse_lens(image, alpha, self.grid, self.source_grid, self.min_weight)
        relensed = ray_trace(source, alpha, self.grid, self.source_grid)
        return LensingOutput(psi, alpha, source, weight, relensed)

    def macro_residual(self, image: torch.Tensor, macro: MacroLens) -> MacroResidual:
        """The image re-lensed through ``macro`` alone, and the source-plane consistency of the image under it.

        Every image pixel that lands on a source pixel should carry the same source light if the smooth lens were
        the whole lens; substructure breaks that for one image of a multiply imaged point and not for its
        counter-images. ``spread`` is the weighted variance ``E[I^2] - E[I]^2`` of the image pixels on each source
        pixel (``inverse_lens`` weights), ray-traced back to the image plane; ``image - relensed`` is the residual.
        """
        check_field(image, "image", None, self.grid)
        dtype, image = image.dtype, image.double()  # E[I^2] - E[I]^2 cancels: float32 would leave ~1e-5 of it
        alpha = macro_deflection(_macro_like(macro, image, "image"), self.grid)
        channels = image.shape[1]
        moments, weight = inverse_lens(
            torch.cat((image, image * image), 1), alpha, self.grid, self.source_grid, self.min_weight
        )
        # moments are sum(w I^k) / max(W, min_weight): the variance, faded like them where coverage is thin, is
        # E[I^2] - E[I]^2 max(W, min_weight) / W
        mean, mean_square = moments[:, :channels], moments[:, channels:]
        fade = weight.clamp_min(self.min_weight) / weight.clamp_min(1e-12)
        variance = (mean_square - mean * mean * fade).clamp_min(0)
        traced = ray_trace(torch.cat((mean, variance), 1), alpha, self.grid, self.source_grid).to(dtype)
        return MacroResidual(traced[:, :channels], traced[:, channels:])

    def extra_repr(self) -> str:
        return f"grid={self.grid}, source_grid={self.source_grid}, min_weight={self.min_weight}"


def _macro_like(macro: MacroLens, like: torch.Tensor, name: str) -> MacroLens:
    """``macro`` on ``like``'s device and dtype, after checking that it has one lens per image of ``like``."""
    if macro.batch_size != like.shape[0]:
        raise ValueError(f"{name} has {like.shape[0]} images but the macro lens {macro.batch_size}")
    return MacroLens(*(value.to(like) for value in macro))
