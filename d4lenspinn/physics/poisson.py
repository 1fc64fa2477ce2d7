"""Free-space Poisson solver: convergence -> lensing potential -> deflection, by zero-padded FFT convolution.

The continuous problem is ``laplacian(psi) = 2 kappa`` with ``alpha = grad(psi)`` (angles in arcsec, kappa
dimensionless). We solve its discrete counterpart exactly, with free-space (not periodic) boundary conditions:

* ``psi = 2 s^2 (G * kappa)``, where ``G`` is the lattice Green's function of the 5-point Laplacian
  (:mod:`d4lenspinn.physics.green`) shifted by a constant so that ``psi`` tends to the continuum kernel
  ``psi(theta) = (1/pi) sum_pixels kappa s^2 ln|theta - theta'|``. The 5-point Laplacian of ``psi`` therefore equals
  ``2 kappa`` at every interior pixel to round-off (:func:`poisson_residual`).
* ``alpha`` is the centred difference of that same ``psi`` (``alpha_x = (psi[j+1] - psi[j-1]) / 2s``), folded into
  the convolution kernel so that it is available on every pixel, border included.

The linear convolution of an ``n x n`` map with a kernel of ``(2n-1)^2`` offsets is done as a circular convolution on
an ``N x N`` grid, ``N`` the smallest 2,3,5-smooth size >= ``2n - 1`` (300 for n = 150, 128 for n = 64), so there is
no wrap-around. Both kernels are D4-symmetric, so the solver commutes exactly with rotations and reflections.
Discretisation error relative to the continuum is second order in the pixel size for smooth convergence and
first order next to a cusp (SIS, SIE); docs/physics.md lists the error against analytic profiles.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .green import LATTICE_GREEN_OFFSET, lattice_green_table
from .grid import PixelGrid, check_field

__all__ = [
    "fft_size",
    "poisson_kernels",
    "kernel_spectra",
    "potential_and_deflection",
    "potential_from_kappa",
    "deflection_from_kappa",
    "poisson_residual",
]


def fft_size(minimum: int) -> int:
    """Smallest integer >= ``minimum`` whose only prime factors are 2, 3 and 5 (fast for every FFT backend)."""
    size = max(int(minimum), 1)
    while True:
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return size
        size += 1


@lru_cache(maxsize=16)
def poisson_kernels(grid: PixelGrid) -> np.ndarray:
    """Real-space kernels ``(3, 2n-1, 2n-1)`` float64 for ``psi``, ``alpha_x``, ``alpha_y``.

    Entry ``[c, n-1+di, n-1+dj]`` is the response at offset ``(di, dj)`` (rows, columns) to unit convergence in one
    pixel: ``psi`` in arcsec^2, ``alpha`` in arcsec. Read-only and cached per grid.
    """
    n, s = grid.n, grid.pixel_scale
    table = lattice_green_table(n)
    offsets = np.abs(np.arange(-(n - 1), n))
    rows, cols = offsets[:, None], offsets[None, :]
    psi = 2.0 * s**2 * (table[rows, cols] + (np.log(s) / (2.0 * np.pi) - LATTICE_GREEN_OFFSET))
    signed = np.arange(-(n - 1), n)
    plus, minus = np.abs(signed + 1), np.abs(signed - 1)
    alpha_x = s * (table[rows, plus[None, :]] - table[rows, minus[None, :]])
    alpha_y = s * (table[plus[:, None], cols] - table[minus[:, None], cols])
    kernels = np.stack([psi, alpha_x, alpha_y])
    kernels.setflags(write=False)
    return kernels


@lru_cache(maxsize=16)
def kernel_spectra(grid: PixelGrid) -> torch.Tensor:
    """``rfft2`` of the zero-padded kernels: complex128 ``(3, N, N // 2 + 1)`` with ``N = fft_size(2n - 1)``."""
    n = grid.n
    size = fft_size(2 * n - 1)
    padded = np.zeros((3, size, size))
    kernels = poisson_kernels(grid)
    # offset d sits at index d mod N, so that the circular convolution equals the linear one on the n x n crop
    idx = np.arange(-(n - 1), n) % size
    padded[:, idx[:, None], idx[None, :]] = kernels
    return torch.fft.rfft2(torch.from_numpy(padded))


# On CPU, FFTs of many large planes at once run out of cache and get several times slower per plane
# (measured here: 64 x 3 planes of 300 x 300 take ~4x longer in one call than in chunks of ~1 MB); cap each call.
_CPU_FFT_ELEMENTS = 2**18


def _convolve(kappa: torch.Tensor, spectra: torch.Tensor, n: int) -> torch.Tensor:
    """Linear convolution of ``kappa (B, 1, n, n)`` with each kernel whose spectrum is in ``spectra (K, N, N/2+1)``.

    Returns ``(B, K, n, n)``. ``rfft2`` with ``s=(N, N)`` zero-pads ``kappa`` at the high-index end.
    """
    size = spectra.shape[-2]
    complex_dtype = torch.complex128 if kappa.dtype == torch.float64 else torch.complex64
    spectra = spectra.to(dtype=complex_dtype, device=kappa.device)
    chunk = kappa.shape[0]
    if kappa.device.type == "cpu":
        chunk = max(1, _CPU_FFT_ELEMENTS // (spectra.shape[0] * size * size))
    parts = [
        torch.fft.irfft2(torch.fft.rfft2(part, s=(size, size)) * spectra, s=(size, size))[..., :n, :n]
        for part in kappa.split(chunk)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def potential_and_deflection(
    kappa: torch.Tensor, grid: PixelGrid, spectra: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lensing potential ``psi (B, 1, n, n)`` [arcsec^2] and deflection ``alpha (B, 2, n, n)`` [arcsec] of ``kappa``.

    ``kappa`` is ``(B, 1, n, n)``, dimensionless, on ``grid``. One forward FFT serves both outputs. ``spectra`` lets
    a caller (e.g. :class:`d4lenspinn.physics.LensingEngine`) pass :func:`kernel_spectra` already on its device.
    """
    check_field(kappa, "kappa", 1, grid)
    spectra = kernel_spectra(grid) if spectra is None else spectra
    out = _convolve(kappa, spectra, grid.n)  # (B, 3, n, n)
    return out[:, :1], out[:, 1:]


def potential_from_kappa(kappa: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """Free-space solution ``psi (B, 1, n, n)`` [arcsec^2] of ``laplacian(psi) = 2 kappa`` for ``kappa (B,1,n,n)``."""
    check_field(kappa, "kappa", 1, grid)
    return _convolve(kappa, kernel_spectra(grid)[:1], grid.n)


def deflection_from_kappa(kappa: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """Deflection ``alpha = grad(psi)`` as ``(B, 2, n, n)`` [arcsec], channel 0 = alpha_x, 1 = alpha_y."""
    check_field(kappa, "kappa", 1, grid)
    return _convolve(kappa, kernel_spectra(grid)[1:], grid.n)


def poisson_residual(psi: torch.Tensor, kappa: torch.Tensor, grid: PixelGrid) -> torch.Tensor:
    """``laplacian_5pt(psi) - 2 kappa`` on the interior pixels, shape ``(B, 1, n-2, n-2)``, dimensionless.

    Uses the 5-point Laplacian that the solver inverts exactly, so it is at round-off for
    ``psi = potential_from_kappa(kappa)``: ~1e-12 of max|kappa| in float64. In float32 the second difference
    amplifies the round-off of ``psi`` by ``4/s^2`` (1600 at 0.05"/pixel), giving ~3e-4 of max|kappa|. The border
    pixels are excluded because their stencil needs ``psi`` outside the grid.
    """
    check_field(psi, "psi", 1, grid)
    check_field(kappa, "kappa", 1, grid)
    if psi.shape[0] != kappa.shape[0]:
        raise ValueError(
            f"psi and kappa must have the same batch size, got {tuple(psi.shape)} and {tuple(kappa.shape)}"
        )
    lap = (
        psi[..., 2:, 1:-1] + psi[..., :-2, 1:-1] + psi[..., 1:-1, 2:] + psi[..., 1:-1, :-2] - 4.0 * psi[..., 1:-1, 1:-1]
    ) / grid.pixel_scale**2
    return lap - 2.0 * kappa[..., 1:-1, 1:-1]
