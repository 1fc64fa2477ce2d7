"""Free-space lattice Green's function of the 5-point Laplacian.

``G(m, k)`` solves ``G(m+1,k) + G(m-1,k) + G(m,k+1) + G(m,k-1) - 4 G(m,k) = delta(m) delta(k)`` on the infinite
unit lattice, normalised so that ``G(0, 0) = 0``. It is the exact inverse of the discrete Laplacian that
:func:`d4lenspinn.physics.poisson_residual` applies, which is what makes the residual of the solver's own output
vanish to round-off. Far from the origin (Martinsson & Rodin 2002, Proc. R. Soc. A 458, 2609)::

    G(r, phi) = (ln r + gamma + 1.5 ln 2) / (2 pi) - cos(4 phi) / (24 pi r^2) + O(r^-4)

so on a grid of spacing ``s`` it tends to the continuum kernel ``ln|theta| / (2 pi)`` plus a known constant.

Values come from the one-dimensional integral (Fourier transform along one lattice axis, exact solution along the
other), with ``cosh(sigma) = 2 - cos(t)``::

    G(m, k) = 1/(2 pi) * integral_0^pi [1 - exp(-|m| sigma) cos(k t)] / sinh(sigma) dt,

evaluated with composite Gauss-Legendre quadrature to ~1e-15 absolute (checked in the tests against a finer rule,
the exact value ``G(1, 1) = 1/pi`` and the asymptotic series).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["lattice_green_table", "LATTICE_GREEN_OFFSET"]

#: ``lim (G(r) - ln(r) / (2 pi))`` as ``r -> inf`` for the ``G(0, 0) = 0`` normalisation.
LATTICE_GREEN_OFFSET = (np.euler_gamma + 1.5 * np.log(2.0)) / (2.0 * np.pi)

_GAUSS_ORDER = 16
_CHUNK = 512


def _quadrature_rule(n_max: int, panels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, pi]: uniform panels, the first one refined geometrically towards t = 0."""
    panels = panels or max(32, n_max // 3)
    first = np.pi / panels
    edges = np.concatenate(([0.0], first * 2.0 ** -np.arange(40, 0, -1), np.linspace(first, np.pi, panels)))
    x, w = np.polynomial.legendre.leggauss(_GAUSS_ORDER)
    a, b = edges[:-1, None], edges[1:, None]
    return (0.5 * (b - a) * (x + 1.0) + a).ravel(), (0.5 * (b - a) * w).ravel()


@lru_cache(maxsize=8)
def lattice_green_table(n_max: int, panels: int | None = None) -> np.ndarray:
    """``G(m, k)`` for ``0 <= m, k <= n_max`` as a float64 array of shape ``(n_max + 1, n_max + 1)``.

    The result is cached and read-only; ``G(-m, k) = G(m, k) = G(k, m)``.
    """
    if n_max < 0:
        raise ValueError(f"n_max must be >= 0, got {n_max}")
    t, w = _quadrature_rule(n_max, panels)
    u = 2.0 * np.sin(0.5 * t) ** 2  # cosh(sigma) - 1, computed without cancellation
    sinh_sigma = np.sqrt(u * (u + 2.0))
    sigma = np.log1p(u + sinh_sigma)
    weights = w / sinh_sigma / (2.0 * np.pi)

    m_idx, k_idx = np.triu_indices(n_max + 1)  # k >= m: integrate with the decaying exponential along the longer axis
    far, near = k_idx.astype(np.float64), m_idx.astype(np.float64)
    values = np.empty(far.size)
    for s in range(0, far.size, _CHUNK):
        f, nr = far[s : s + _CHUNK, None], near[s : s + _CHUNK, None]
        decay = np.exp(-f * sigma)
        # 1 - exp(-f sigma) cos(nr t), rearranged so that no large terms cancel near t = 0
        integrand = -np.expm1(-f * sigma) + 2.0 * decay * np.sin(0.5 * nr * t) ** 2
        values[s : s + _CHUNK] = integrand @ weights
    table = np.zeros((n_max + 1, n_max + 1))
    table[m_idx, k_idx] = values
    table[k_idx, m_idx] = values
    table.setflags(write=False)
    return table
