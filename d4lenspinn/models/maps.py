"""Typed maps: what a model computes between its trunk and its head, one class per kind of model.

Every field a class declares is set (no ``None`` fields, except the residual maps of :class:`LensMaps`, present
only where the model feeds them to its head). Shapes for ``B`` images of ``n x n`` pixels; ``m`` is the source
grid's side. The equivariant kinds (:class:`KappaMaps`, :class:`LensMaps`) know their D4 action:
``maps.transform(g)`` is what the maps of the transformed image must be (scalar maps move their pixels, ``alpha``
is a vector field, the macro lens transforms by :func:`~d4lenspinn.symmetry.transform_macro`).

Example::

    maps = model.forward_features(images)        # KappaMaps for d4lenspinn, LensMaps for d4lenspinn_lens
    maps.kappa, maps.alpha                        # (B, 1, n, n), (B, 2, n, n) [arcsec]
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..physics import MacroLens
from ..symmetry import D4Element, transform_macro, transform_scalar, transform_vector

__all__ = ["KappaMaps", "LensMaps", "FittedLensMaps", "SourceMaps", "FeatureMaps"]


@dataclass(frozen=True)
class KappaMaps:
    """A convergence map and what the lensing engine makes of it.

    ``kappa (B, 1, n, n)`` convergence; ``psi (B, 1, n, n)`` potential [arcsec^2]; ``alpha (B, 2, n, n)`` deflection
    [arcsec]; ``source (B, 1, m, m)`` reconstructed source and ``source_weight (B, 1, m, m)`` its coverage;
    ``relensed (B, 1, n, n)`` the source ray-traced back; ``features (B, C, n, n)`` the (preprocessed) input channels.
    """

    kappa: torch.Tensor
    psi: torch.Tensor
    alpha: torch.Tensor
    source: torch.Tensor
    source_weight: torch.Tensor
    relensed: torch.Tensor
    features: torch.Tensor

    def transform(self, g: D4Element) -> KappaMaps:
        """The maps moved by the D4 element ``g``: maps are scalar fields except the vector field ``alpha``, macro
        lenses transform by :func:`~d4lenspinn.symmetry.transform_macro`, per-image numbers ``(B,)`` are
        invariant."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None or (isinstance(value, torch.Tensor) and value.dim() == 1):
                moved[field.name] = value
            elif field.name == "alpha":
                moved[field.name] = transform_vector(value, g)
            elif isinstance(value, MacroLens):
                moved[field.name] = transform_macro(value, g)
            else:
                moved[field.name] = transform_scalar(value, g)
        return replace(self, **moved)


@dataclass(frozen=True)
class LensMaps(KappaMaps):
    """:class:`KappaMaps` of a macro lens plus substructure: ``kappa = kappa_macro + delta_kappa`` (the SIE's centre
    capped for display), ``macro`` the smooth lens estimate (:class:`~d4lenspinn.physics.MacroLens` of ``(B,)``
    tensors), ``delta_kappa (B, 1, n, n)`` the signed substructure convergence; with residual channels also
    ``macro_relensed`` and ``macro_spread (B, 1, n, n)``, the image re-lensed through the macro lens alone and its
    source-plane spread (:meth:`~d4lenspinn.physics.LensingEngine.macro_residual`), else ``None``."""

    macro: MacroLens
    delta_kappa: torch.Tensor
    macro_relensed: torch.Tensor | None = None
    macro_spread: torch.Tensor | None = None


@dataclass(frozen=True)
class FittedLensMaps(LensMaps):
    """:class:`LensMaps` of a model that fits the smooth lens to each image
    (:func:`~d4lenspinn.physics.fit_smooth_lens`): ``macro`` is the fitted lens, ``macro_estimate`` the network's
    estimate the fit started from, ``macro_relensed (B, 1, n, n)`` the fitted smooth-lens image (SIE + shear +
    Sersic source, PSF, sky), ``normalised_residual (B, 1, n, n)`` ``(image - macro_relensed) / noise_sigma``: what
    the smooth lens cannot explain in units of the noise; ``noise_sigma``, ``reduced_chi2`` ``(B,)``,
    ``fit_failed (B,)`` bool (no finite fit: the residual is that of a flat model) and ``psf_fwhm (B,)`` [arcsec],
    the PSF width of the fit (fitted, or the model's fixed one)."""

    macro_estimate: MacroLens | None = None
    normalised_residual: torch.Tensor | None = None
    noise_sigma: torch.Tensor | None = None
    reduced_chi2: torch.Tensor | None = None
    fit_failed: torch.Tensor | None = None
    psf_fwhm: torch.Tensor | None = None


@dataclass(frozen=True)
class SourceMaps:
    """LensPINN's maps: ``alpha (B, 2, n, n)`` SIS deflection [arcsec], ``source (B, C, n, n)`` and
    ``source_weight (B, 1, n, n)`` from the inverse lens, ``features (B, C, n, n)`` the distortion map."""

    alpha: torch.Tensor
    source: torch.Tensor
    source_weight: torch.Tensor
    features: torch.Tensor


@dataclass(frozen=True)
class FeatureMaps:
    """A classifier's preprocessed input, ``features (B, C, n, n)`` (``residual_cnn``: its fixed stem's output)."""

    features: torch.Tensor
