"""Cartesian shapelets: an orthonormal basis of smooth source light (Refregier 2003; lenstronomy's ``SHAPELETS``).

A lens modeller adds them to the Sersic source so that a clumpy galaxy is not mistaken for a wrong lens::

    basis = shapelet_basis(x, y, scale=0.2, n_max=6)      # (..., 28, H, W) for x, y of shape (..., H, W)

The functions are ``B_ab(x, y) = phi_a(x / scale) phi_b(y / scale) / scale`` for ``a + b <= n_max``, with the
Hermite functions ``phi_n(u) = (2^n n! sqrt(pi))^(-1/2) H_n(u) exp(-u^2 / 2)``, orthonormal in the plane
(``integral B_ab B_cd dx dy = delta_ac delta_bd``); ``(n_max + 1)(n_max + 2) / 2`` of them, the finest resolving
about ``scale / sqrt(n_max)``. Their span is mapped to itself by every rotation and reflection about the centre
(``phi_n(-u) = (-1)^n phi_n(u)``, and the swap ``x <-> y`` exchanges ``a`` and ``b``), so a least-squares fit in it
commutes with D4.
"""

from __future__ import annotations

import math

import torch

__all__ = ["shapelet_basis", "shapelet_count", "shapelet_order"]


def shapelet_count(n_max: int) -> int:
    """Number of shapelets of order ``a + b <= n_max``."""
    return (n_max + 1) * (n_max + 2) // 2


def shapelet_order(count: int) -> int | None:
    """The order ``n_max`` of ``count`` shapelets (the inverse of :func:`shapelet_count`); None for 0 shapelets.
    Raises ``ValueError`` for a count no order gives."""
    if count == 0:
        return None
    order = round((math.sqrt(8 * count + 1) - 3) / 2)
    if order < 0 or shapelet_count(order) != count:
        raise ValueError(f"{count} is not a number of shapelets of order <= n_max (1, 3, 6, 10, ...)")
    return order


def _hermite_functions(u: torch.Tensor, n_max: int) -> list[torch.Tensor]:
    """``[phi_0(u), ..., phi_n_max(u)]`` by the stable three-term recurrence
    ``phi_(n+1) = sqrt(2 / (n + 1)) u phi_n - sqrt(n / (n + 1)) phi_(n-1)``."""
    functions = [math.pi**-0.25 * torch.exp(-0.5 * u * u)]
    if n_max >= 1:
        functions.append(math.sqrt(2.0) * u * functions[0])
    for n in range(1, n_max):
        functions.append(math.sqrt(2 / (n + 1)) * u * functions[n] - math.sqrt(n / (n + 1)) * functions[n - 1])
    return functions


def shapelet_basis(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor | float, n_max: int) -> torch.Tensor:
    """The shapelets of order ``<= n_max`` at ``(x, y)`` [arcsec, relative to the centre] of ``scale`` [arcsec],
    stacked ``(..., K, H, W)`` for ``x, y`` of shape ``(..., H, W)`` and ``scale`` broadcastable to them; ordered by
    total order ``a + b``, then ``a`` descending. Differentiable in all three."""
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 0:
        raise ValueError(f"n_max must be an integer >= 0, got {n_max!r}")
    phi_x, phi_y = _hermite_functions(x / scale, n_max), _hermite_functions(y / scale, n_max)
    basis = [phi_x[total - b] * phi_y[b] / scale for total in range(n_max + 1) for b in range(total + 1)]
    return torch.stack(basis, dim=-3)
