"""The structured output every model returns: logits plus whatever intermediate maps the model computes."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..physics import MacroLens

__all__ = ["ModelOutput"]


class ModelOutput(NamedTuple):
    """Logits ``(B, num_classes)`` and, for physics-informed models, the maps they computed on the way.

    Maps are ``None`` when a model does not compute them. Shapes for ``B`` images of ``n x n`` pixels:
    ``kappa (B, 1, n, n)`` convergence, ``psi (B, 1, n, n)`` potential [arcsec^2], ``alpha (B, 2, n, n)`` deflection
    [arcsec], ``source (B, 1, m, m)`` reconstructed source, ``source_weight (B, 1, m, m)`` its coverage,
    ``relensed (B, 1, n, n)`` the source ray-traced back, ``features (B, C, n, n)`` the preprocessed input channels;
    models with a macro lens: ``macro`` its estimate (:class:`~d4lenspinn.physics.MacroLens` of ``(B,)`` tensors) and
    ``delta_kappa (B, 1, n, n)`` the signed substructure convergence on top of it, ``macro_relensed`` and
    ``macro_spread (B, 1, n, n)`` the image re-lensed through the macro lens alone and its source-plane spread
    (:meth:`~d4lenspinn.physics.LensingEngine.macro_residual`).
    """

    logits: torch.Tensor
    kappa: torch.Tensor | None = None
    psi: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    source: torch.Tensor | None = None
    source_weight: torch.Tensor | None = None
    relensed: torch.Tensor | None = None
    features: torch.Tensor | None = None
    macro: MacroLens | None = None
    delta_kappa: torch.Tensor | None = None
    macro_relensed: torch.Tensor | None = None
    macro_spread: torch.Tensor | None = None
