"""The smooth macro lens: a singular isothermal ellipsoid (SIE) plus external shear, one per image.

Lens modellers fit this first; substructure is what it cannot explain. Its deflection is analytic, so it needs no
grid-bound solver, and the external shear (mass outside the field) is a term no convergence inside the field can
produce. Every function is differentiable in all seven parameters, the round lens included::

    macro = MacroLens.from_values(theta_e=1.28, e1=0.1, gamma1=0.05)     # batch of 1; or (B,) tensors
    alpha = macro_deflection(macro, grid)                                  # (B, 2, n, n) arcsec
    psi = macro_potential(macro, grid)                                     # (B, 1, n, n) arcsec^2
    kappa = macro_convergence(macro, grid)                                 # (B, 1, n, n), the SIE's (shear has none)

Potential ``psi = psi_SIE(theta - c) + g1 (x^2 - y^2) / 2 + g2 x y``: the SIE of ``d4lenspinn.physics.profiles``
(lenstronomy's ellipticity convention) centred at ``c = (center_x, center_y)``, and the shear about the optical axis
(lenstronomy's SHEAR with ``ra_0 = dec_0 = 0``, as DeepLenseSim uses it). Under the D4 grid symmetries ``theta_e``
is invariant, the centre is a vector and ``(e1, e2)``, ``(gamma1, gamma2)`` are spin-2 pairs
(:func:`d4lenspinn.symmetry.transform_macro`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import profiles as P
from .grid import PixelGrid
from .parameters import broadcast_fields, unpack_columns

__all__ = ["MacroLens", "check_macro", "macro_deflection", "macro_potential", "macro_convergence"]


class MacroLens(NamedTuple):
    """SIE + external shear parameters, each a ``(B,)`` tensor: angles in arcsec, the rest dimensionless."""

    theta_e: torch.Tensor  # Einstein radius, > 0
    e1: torch.Tensor  # SIE ellipticity, |(e1, e2)| < 1
    e2: torch.Tensor
    center_x: torch.Tensor  # SIE centre
    center_y: torch.Tensor
    gamma1: torch.Tensor  # external shear
    gamma2: torch.Tensor

    @classmethod
    def from_values(cls, batch: int = 1, dtype: torch.dtype = torch.float64, device=None, **values) -> MacroLens:
        """Every parameter ``values[name]`` (default 0; ``theta_e`` has none) broadcast to a ``(batch,)`` tensor."""
        unknown = sorted(set(values) - set(cls._fields))
        if unknown or "theta_e" not in values:
            raise ValueError(f"MacroLens needs theta_e and takes {list(cls._fields)}; got {sorted(values)}")
        return cls(*broadcast_fields(cls._fields, values, batch, dtype, device))

    @classmethod
    def from_tensor(cls, packed: torch.Tensor) -> MacroLens:
        """From ``(B, 7)`` columns in field order (:meth:`as_tensor`)."""
        return cls(*unpack_columns(packed, cls._fields, "macro"))

    def as_tensor(self) -> torch.Tensor:
        """``(B, 7)``, columns in field order."""
        return torch.stack(tuple(self), dim=1)

    @property
    def batch_size(self) -> int:
        return self.theta_e.shape[0]


def check_macro(macro: MacroLens, where: str = "macro lens") -> None:
    """Raise ``ValueError`` naming the image and value when a parameter is non-finite, ``theta_e <= 0`` or
    ``|e| >= 1``, or when the parameters are not ``(B,)`` tensors of one batch size."""
    if not isinstance(macro, MacroLens):
        raise ValueError(f"{where} must be a MacroLens, got {type(macro).__name__}")
    shapes = {name: tuple(value.shape) for name, value in zip(macro._fields, macro, strict=True)}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"{where}: every parameter must be a (B,) tensor of one batch size, got shapes {shapes}")
    for name, value in zip(macro._fields, macro, strict=True):
        bad = ~torch.isfinite(value)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"{where}: {name} of image {i} is {value[i].item()}; expected a finite value")
    problems = (
        ("theta_e", macro.theta_e <= 0, "expected theta_e > 0 arcsec"),
        ("|e|", macro.e1 * macro.e1 + macro.e2 * macro.e2 >= 1, "expected |(e1, e2)| < 1"),
    )
    for name, bad, expected in problems:
        if bad.any():
            i = int(bad.nonzero()[0])
            value = macro.theta_e[i] if name == "theta_e" else torch.hypot(macro.e1[i], macro.e2[i])
            raise ValueError(f"{where}: {name} of image {i} is {value.item():.6g}; {expected}")


def _maps(macro: MacroLens, grid: PixelGrid) -> tuple[torch.Tensor, ...]:
    """Coordinates ``(n, n)`` and every parameter as a ``(B, 1, 1)`` map, in the parameters' dtype and device."""
    check_macro(macro)
    x, y = grid.coordinates(macro.theta_e.dtype, macro.theta_e.device)
    return (x, y, *(value.reshape(-1, 1, 1) for value in macro))


def macro_deflection(macro: MacroLens, grid: PixelGrid) -> torch.Tensor:
    """SIE + shear deflection ``(B, 2, n, n)`` [arcsec] on ``grid``."""
    x, y, theta_e, e1, e2, cx, cy, g1, g2 = _maps(macro, grid)
    return P.sie_ellipticity_deflection(x, y, theta_e, e1, e2, cx, cy) + P.shear_deflection(x, y, g1, g2)


def macro_potential(macro: MacroLens, grid: PixelGrid) -> torch.Tensor:
    """SIE + shear potential ``(B, 1, n, n)`` [arcsec^2] on ``grid``."""
    x, y, theta_e, e1, e2, cx, cy, g1, g2 = _maps(macro, grid)
    return P.sie_ellipticity_potential(x, y, theta_e, e1, e2, cx, cy) + P.shear_potential(x, y, g1, g2)


def macro_convergence(macro: MacroLens, grid: PixelGrid, cap: float = math.inf) -> torch.Tensor:
    """The SIE convergence ``(B, 1, n, n)`` on ``grid`` (shear adds none), optionally capped at ``cap`` (the SIE
    diverges as ``1/r`` at its centre)."""
    x, y, theta_e, e1, e2, cx, cy, _, _ = _maps(macro, grid)
    kappa = P.sie_ellipticity_convergence(x, y, theta_e, e1, e2, cx, cy)
    return kappa.clamp_max(cap) if math.isfinite(cap) else kappa
