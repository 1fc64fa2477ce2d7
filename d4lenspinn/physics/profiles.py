"""Analytic lens profiles: convergence, deflection and (where closed-form) potential.

Pure functions of coordinate tensors ``x, y`` (arcsec, any broadcastable shape ``(..., H, W)``) and parameters
(Python floats or tensors broadcastable against ``(..., 1, 1)``, e.g. shape ``(B, 1, 1)`` for a batch). Scalar
outputs have shape ``(..., 1, H, W)`` and deflections ``(..., 2, H, W)`` with channel 0 = alpha_x, 1 = alpha_y, so
that ``x = grid.x`` and ``theta_e = torch.full((B, 1, 1), 1.2)`` give the engine's ``(B, C, H, W)`` layout.
Conventions: ``laplacian(psi) = 2 kappa``, ``alpha = grad(psi)``; angles in arcsec.

References: SIS/point mass/shear/line segment: Schneider, Ehlers & Falco (1992). SIE: Kormann, Schneider &
Bartelmann (1994, A&A 284, 285), Keeton (2001, astro-ph/0102341) with core s = 0. NFW: Bartelmann (1996, A&A 313, 697);
Wright & Brainerd (2000, ApJ 534, 34). Ellipticity (e1, e2): the lenstronomy convention
``q = (1 - |e|) / (1 + |e|)``, ``phi = atan2(e2, e1) / 2``.
"""

from __future__ import annotations

import torch

__all__ = [
    "ellipticity_to_axis_ratio",
    "sis_convergence",
    "sis_deflection",
    "sis_potential",
    "sie_convergence",
    "sie_deflection",
    "sie_ellipticity_convergence",
    "sie_ellipticity_deflection",
    "sie_ellipticity_potential",
    "point_mass_deflection",
    "point_masses_deflection",
    "point_mass_potential",
    "nfw_convergence",
    "nfw_deflection",
    "gaussian_convergence",
    "gaussian_deflection",
    "shear_deflection",
    "shear_potential",
    "line_segment_deflection",
]

Param = float | torch.Tensor

# keeps 1/r and log(r) finite exactly at a profile's centre (1e-12 arcsec is far below any pixel)
_R_MIN = 1e-12


def _scalar(value: torch.Tensor) -> torch.Tensor:
    return value.unsqueeze(-3)


def _vector(vx: torch.Tensor, vy: torch.Tensor) -> torch.Tensor:
    return torch.stack(torch.broadcast_tensors(vx, vy), dim=-3)


def _relative(x: torch.Tensor, y: torch.Tensor, center_x: Param, center_y: Param) -> tuple[torch.Tensor, ...]:
    dx, dy = x - center_x, y - center_y
    return dx, dy, torch.sqrt(dx * dx + dy * dy).clamp_min(_R_MIN)


def ellipticity_to_axis_ratio(e1: Param, e2: Param) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis ratio ``q`` (minor/major, in (0, 1]) and major-axis angle ``phi`` (radians from +x) of ``(e1, e2)``."""
    e1, e2 = torch.as_tensor(e1, dtype=torch.float64), torch.as_tensor(e2, dtype=torch.float64)
    c = torch.sqrt(e1 * e1 + e2 * e2)
    if torch.any(c >= 1):
        raise ValueError(f"ellipticity |(e1, e2)| must be < 1, got e1={e1}, e2={e2}")
    return (1 - c) / (1 + c), 0.5 * torch.atan2(e2, e1)


# --- singular isothermal sphere -------------------------------------------------------------------------------------


def sis_convergence(x: torch.Tensor, y: torch.Tensor, theta_e: Param, center_x: Param = 0.0, center_y: Param = 0.0):
    """SIS convergence ``theta_e / (2 r)``, ``(..., 1, H, W)``."""
    _, _, r = _relative(x, y, center_x, center_y)
    return _scalar(theta_e / (2 * r))


def sis_deflection(x: torch.Tensor, y: torch.Tensor, theta_e: Param, center_x: Param = 0.0, center_y: Param = 0.0):
    """SIS deflection ``theta_e * theta / |theta|`` [arcsec], ``(..., 2, H, W)``."""
    dx, dy, r = _relative(x, y, center_x, center_y)
    return _vector(theta_e * dx / r, theta_e * dy / r)


def sis_potential(x: torch.Tensor, y: torch.Tensor, theta_e: Param, center_x: Param = 0.0, center_y: Param = 0.0):
    """SIS potential ``theta_e * r`` [arcsec^2], ``(..., 1, H, W)``."""
    _, _, r = _relative(x, y, center_x, center_y)
    return _scalar(theta_e * r)


# --- singular isothermal ellipsoid ----------------------------------------------------------------------------------


def _rotate(vx: torch.Tensor, vy: torch.Tensor, phi: Param) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = torch.cos(torch.as_tensor(phi)), torch.sin(torch.as_tensor(phi))
    return c * vx - s * vy, s * vx + c * vy


def _sie_frame(x, y, q, phi, center_x, center_y):
    """Coordinates along the major (x') and minor (y') axes and the elliptical radius ``sqrt(q^2 x'^2 + y'^2)``."""
    q = torch.as_tensor(q, dtype=x.dtype, device=x.device)
    if torch.any((q <= 0) | (q > 1)):
        raise ValueError(f"SIE axis ratio q must lie in (0, 1], got {q}")
    xr, yr = _rotate(x - center_x, y - center_y, -torch.as_tensor(phi, dtype=x.dtype, device=x.device))
    return xr, yr, q, torch.sqrt(q * q * xr * xr + yr * yr).clamp_min(_R_MIN)


def sie_convergence(
    x: torch.Tensor,
    y: torch.Tensor,
    theta_e: Param,
    q: Param,
    phi: Param = 0.0,
    center_x: Param = 0.0,
    center_y: Param = 0.0,
):
    """SIE convergence ``theta_e / (2 sqrt(q x'^2 + y'^2 / q))``, major axis at angle ``phi``; ``(..., 1, H, W)``.

    ``theta_e`` is the Einstein radius in the intermediate-axis normalisation (the SIS one for ``q = 1``).
    """
    _, _, q, omega = _sie_frame(x, y, q, phi, center_x, center_y)
    return _scalar(theta_e * torch.sqrt(q) / (2 * omega))


def sie_deflection(
    x: torch.Tensor,
    y: torch.Tensor,
    theta_e: Param,
    q: Param,
    phi: Param = 0.0,
    center_x: Param = 0.0,
    center_y: Param = 0.0,
):
    """SIE deflection [arcsec], ``(..., 2, H, W)`` (Kormann et al. 1994, eq. 27; Keeton 2001 with s = 0)."""
    xr, yr, q, omega = _sie_frame(x, y, q, phi, center_x, center_y)
    f = torch.sqrt(1 - q * q)
    zx, zy = xr / omega, yr / omega
    # nearly round: atan(f z)/f and atanh(f z)/f by their series (next terms ~ f^4 < 1e-12) instead of 0/0
    round_ = f < 1e-3
    f_safe = torch.where(round_, torch.ones_like(f), f)
    ax = torch.where(round_, zx - f * f * zx**3 / 3, torch.atan(f_safe * zx) / f_safe)
    ay = torch.where(round_, zy + f * f * zy**3 / 3, torch.atanh(f_safe * zy) / f_safe)
    ax, ay = theta_e * torch.sqrt(q) * ax, theta_e * torch.sqrt(q) * ay
    return _vector(*_rotate(ax, ay, torch.as_tensor(phi, dtype=x.dtype, device=x.device)))


# --- SIE in (e1, e2): smooth through the round limit, for fitting and learning ----------------------------------------

# |e| below which the first-order expansion in (e1, e2) replaces the closed form (second-order error ~ |e|^2 theta_e)
_ROUND_E = 1e-3


def _sie_ellipticity_terms(x, y, theta_e, e1, e2, center_x, center_y):
    """Shared pieces: offsets, the round mask, and (e1, e2) replaced by a safe value where round, so that neither
    branch of a ``torch.where`` produces a NaN value or gradient."""
    dx, dy = x - center_x, y - center_y
    e1, e2 = torch.as_tensor(e1, dtype=x.dtype, device=x.device), torch.as_tensor(e2, dtype=x.dtype, device=x.device)
    round_ = e1 * e1 + e2 * e2 < _ROUND_E**2
    e1_safe, e2_safe = torch.where(round_, 0.5, e1), torch.where(round_, 0.0, e2)
    r2 = (dx * dx + dy * dy).clamp_min(_R_MIN**2)
    return dx, dy, e1, e2, round_, e1_safe, e2_safe, r2


def _sie_shape(e1: torch.Tensor, e2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis ratio ``q`` and major-axis angle ``phi`` of a non-round ``(e1, e2)`` (lenstronomy convention)."""
    c = torch.sqrt(e1 * e1 + e2 * e2)
    return (1 - c) / (1 + c), 0.5 * torch.atan2(e2, e1)


def sie_ellipticity_deflection(
    x: torch.Tensor, y: torch.Tensor, theta_e: Param, e1: Param, e2: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """SIE deflection [arcsec] ``(..., 2, H, W)`` for ellipticity ``(e1, e2)`` (``|e| < 1``, lenstronomy convention).

    Equal to :func:`sie_deflection` with ``q, phi`` from :func:`ellipticity_to_axis_ratio`, and differentiable in
    every parameter everywhere, the round lens included: below ``|e| = 1e-3`` it is the first-order expansion
    ``alpha = grad[theta_e r - theta_e (e1 (x^2 - y^2) + 2 e2 x y) / (3 r)]`` (the potential of the convergence's
    ``theta_e (e1 cos 2t + e2 sin 2t) / (2 r)`` term), whose error is ``O(|e|^2 theta_e)``.
    """
    dx, dy, e1, e2, round_, e1s, e2s, r2 = _sie_ellipticity_terms(x, y, theta_e, e1, e2, center_x, center_y)
    q, phi = _sie_shape(e1s, e2s)
    xr, yr = _rotate(dx, dy, -phi)
    omega = torch.sqrt((q * q * xr * xr + yr * yr).clamp_min(_R_MIN**2))
    f = torch.sqrt(1 - q * q)  # >= 0.06 off the round branch
    ax = theta_e * torch.sqrt(q) * torch.atan(f * xr / omega) / f
    ay = theta_e * torch.sqrt(q) * torch.atanh(f * yr / omega) / f
    exact_x, exact_y = _rotate(ax, ay, phi)
    r = torch.sqrt(r2)
    a = e1 * (dx * dx - dy * dy) + 2 * e2 * dx * dy  # psi_1 = -theta_e a / (3 r)
    a_x, a_y = 2 * (e1 * dx + e2 * dy), 2 * (e2 * dx - e1 * dy)
    first_x = theta_e * dx / r - theta_e / 3 * (a_x / r - a * dx / (r * r2))
    first_y = theta_e * dy / r - theta_e / 3 * (a_y / r - a * dy / (r * r2))
    return _vector(torch.where(round_, first_x, exact_x), torch.where(round_, first_y, exact_y))


def sie_ellipticity_potential(
    x: torch.Tensor, y: torch.Tensor, theta_e: Param, e1: Param, e2: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """SIE potential [arcsec^2] ``(..., 1, H, W)``: ``psi = (theta - c) . alpha`` (it is homogeneous of degree 1)."""
    alpha = sie_ellipticity_deflection(x, y, theta_e, e1, e2, center_x, center_y)
    return _scalar(alpha[..., 0, :, :] * (x - center_x) + alpha[..., 1, :, :] * (y - center_y))


def sie_ellipticity_convergence(
    x: torch.Tensor, y: torch.Tensor, theta_e: Param, e1: Param, e2: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """SIE convergence ``theta_e / (2 sqrt(q x'^2 + y'^2 / q))`` ``(..., 1, H, W)`` for ``(e1, e2)``, smooth in
    ``(e1, e2)`` as :func:`sie_ellipticity_deflection` (first order ``theta_e (r^2 + a) / (2 r^3)`` when round)."""
    dx, dy, e1, e2, round_, e1s, e2s, r2 = _sie_ellipticity_terms(x, y, theta_e, e1, e2, center_x, center_y)
    q, phi = _sie_shape(e1s, e2s)
    xr, yr = _rotate(dx, dy, -phi)
    exact = theta_e / (2 * torch.sqrt((q * xr * xr + yr * yr / q).clamp_min(_R_MIN**2)))
    r = torch.sqrt(r2)
    first = theta_e * (r2 + e1 * (dx * dx - dy * dy) + 2 * e2 * dx * dy) / (2 * r * r2)
    return _scalar(torch.where(round_, first, exact))


# --- point mass ------------------------------------------------------------------------------------------------------


def point_mass_deflection(
    x: torch.Tensor, y: torch.Tensor, theta_e: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """Point-mass deflection ``theta_e^2 theta / |theta|^2`` [arcsec]; its convergence is ``pi theta_e^2 delta``."""
    dx, dy, r = _relative(x, y, center_x, center_y)
    return _vector(theta_e**2 * dx / r**2, theta_e**2 * dy / r**2)


_POINT_R2_MIN = 1e-12  # arcsec^2 (r >= 1e-6 arcsec); keeps a point mass finite exactly at a pixel centre


def point_masses_deflection(
    x: torch.Tensor,
    y: torch.Tensor,
    theta_e_squared: torch.Tensor,
    center_x: torch.Tensor,
    center_y: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed deflection ``(B, 2, H, W)`` [arcsec] of ``K`` point masses per image: :func:`point_mass_deflection`
    with ``theta_e^2`` given, over ``theta_e_squared``, ``center_x``, ``center_y`` of shape ``(B, K)`` [arcsec^2,
    arcsec] at ``x, y`` ``(B or 1, H, W)``. Added into ``out`` when given (in place, one mass at a time, so memory
    stays at ``(B, H, W)`` for any ``K``)."""
    if out is None:
        out = torch.zeros(theta_e_squared.shape[0], 2, *x.shape[-2:], dtype=x.dtype, device=x.device)
    ax, ay = out[:, 0], out[:, 1]  # views: accumulated in place
    for k in range(theta_e_squared.shape[1]):
        dx, dy = x - center_x[:, k, None, None], y - center_y[:, k, None, None]
        scale = theta_e_squared[:, k, None, None] / (dx * dx + dy * dy).clamp_min(_POINT_R2_MIN)
        ax.addcmul_(scale, dx)
        ay.addcmul_(scale, dy)
    return out


def point_mass_potential(
    x: torch.Tensor, y: torch.Tensor, theta_e: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """Point-mass potential ``theta_e^2 ln(r / 1 arcsec)`` [arcsec^2], ``(..., 1, H, W)``."""
    _, _, r = _relative(x, y, center_x, center_y)
    return _scalar(theta_e**2 * torch.log(r))


# --- NFW -------------------------------------------------------------------------------------------------------------


# |u - 1| below which the Taylor series (error < 1e-12) replaces the 0/0-prone closed forms
_NFW_SERIES = 1e-4


def _nfw_f(u: torch.Tensor) -> torch.Tensor:
    """``arccosh(1/u)/sqrt(1-u^2)`` for u < 1, ``arccos(1/u)/sqrt(u^2-1)`` for u > 1, series near u = 1."""
    near = (u - 1).abs() < _NFW_SERIES
    us = torch.where(near, torch.full_like(u, 0.5), u)
    inner = torch.acosh(1 / us.clamp(max=1)) / torch.sqrt((1 - us * us).clamp_min(1e-300))
    outer = torch.acos(1 / us.clamp(min=1)) / torch.sqrt((us * us - 1).clamp_min(1e-300))
    d = u - 1
    series = 1 - 2 * d / 3 + 7 * d * d / 15 - 12 * d**3 / 35
    return torch.where(near, series, torch.where(us < 1, inner, outer))


def nfw_convergence(
    x: torch.Tensor, y: torch.Tensor, kappa_s: Param, r_s: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """NFW convergence ``2 kappa_s (1 - F(u)) / (u^2 - 1)`` with ``u = r / r_s``; ``(..., 1, H, W)``."""
    _, _, r = _relative(x, y, center_x, center_y)
    u = r / r_s
    near = (u - 1).abs() < _NFW_SERIES
    d = u - 1
    ratio = torch.where(
        near, 1 / 3 - 2 * d / 5 + 13 * d * d / 35, (1 - _nfw_f(u)) / torch.where(near, torch.ones_like(u), u * u - 1)
    )
    return _scalar(2 * kappa_s * ratio)


def nfw_deflection(
    x: torch.Tensor, y: torch.Tensor, kappa_s: Param, r_s: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """NFW deflection ``4 kappa_s r_s h(u) / u`` along ``theta``, ``h(u) = ln(u/2) + F(u)`` [arcsec]."""
    dx, dy, r = _relative(x, y, center_x, center_y)
    u = r / r_s
    magnitude = 4 * kappa_s * r_s * (torch.log(u / 2) + _nfw_f(u)) / u
    return _vector(magnitude * dx / r, magnitude * dy / r)


# --- circular Gaussian (a smooth test profile) ----------------------------------------------------------------------


def gaussian_convergence(
    x: torch.Tensor, y: torch.Tensor, kappa_0: Param, sigma: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """Circular Gaussian convergence ``kappa_0 exp(-r^2 / (2 sigma^2))``, ``(..., 1, H, W)``."""
    _, _, r = _relative(x, y, center_x, center_y)
    return _scalar(kappa_0 * torch.exp(-0.5 * (r / sigma) ** 2))


def gaussian_deflection(
    x: torch.Tensor, y: torch.Tensor, kappa_0: Param, sigma: Param, center_x: Param = 0.0, center_y: Param = 0.0
):
    """Its deflection ``2 kappa_0 sigma^2 (1 - exp(-r^2 / 2 sigma^2)) / r`` along ``theta`` [arcsec]."""
    dx, dy, r = _relative(x, y, center_x, center_y)
    magnitude = -2 * kappa_0 * sigma**2 * torch.expm1(-0.5 * (r / sigma) ** 2) / r
    return _vector(magnitude * dx / r, magnitude * dy / r)


# --- external shear --------------------------------------------------------------------------------------------------


def shear_deflection(x: torch.Tensor, y: torch.Tensor, gamma1: Param, gamma2: Param):
    """External-shear deflection ``(g1 x + g2 y, g2 x - g1 y)`` [arcsec], ``(..., 2, H, W)``; no convergence."""
    return _vector(gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y)


def shear_potential(x: torch.Tensor, y: torch.Tensor, gamma1: Param, gamma2: Param):
    """External-shear potential ``g1 (x^2 - y^2) / 2 + g2 x y`` [arcsec^2], ``(..., 1, H, W)``."""
    return _scalar(0.5 * gamma1 * (x * x - y * y) + gamma2 * x * y)


# --- uniform line segment (an axion-string-like mass) ---------------------------------------------------------------


def line_segment_deflection(
    x: torch.Tensor,
    y: torch.Tensor,
    theta_m: Param,
    half_length: Param,
    angle: Param,
    center_x: Param = 0.0,
    center_y: Param = 0.0,
    core: float = 0.0,
):
    """Deflection of a uniform straight segment of total mass ``theta_m^2`` (point-mass units) [arcsec].

    The segment runs from ``-half_length`` to ``+half_length`` (arcsec) along direction ``angle`` (radians from +x)
    through the centre; its line density is ``lambda = theta_m^2 / (2 half_length)`` and, with ``u`` along and ``v``
    across the segment, integrating the point-mass deflection over it gives::

        alpha_u = lambda / 2 * ln(((u + L)^2 + v^2) / ((u - L)^2 + v^2))
        alpha_v = lambda * (atan((L - u) / v) + atan((L + u) / v))

    ``alpha_v`` jumps by ``2 pi lambda`` across the segment (a line density); far away it tends to the point mass.
    With ``core`` > 0 [arcsec] each point of the segment deflects as the softened point mass ``b^2 d / (|d|^2 +
    core^2)`` (the subhalo scan's trial mass): ``v^2`` becomes ``w^2 = v^2 + core^2`` and ``alpha_v = lambda v / w
    (atan((L - u) / w) + atan((L + u) / w))``, smooth across the segment.
    """
    angle = torch.as_tensor(angle, dtype=x.dtype, device=x.device)
    u, v = _rotate(x - center_x, y - center_y, -angle)
    density = theta_m**2 / (2 * half_length)
    tiny = 1e-12  # arcsec; keeps the on-segment limits finite (v -> 0 gives the one-sided value)
    across = v * v + core**2 + tiny**2
    alpha_u = 0.5 * density * torch.log(((u + half_length) ** 2 + across) / ((u - half_length) ** 2 + across))
    if core > 0:
        w = across.sqrt()
        alpha_v = density * v / w * (torch.atan((half_length - u) / w) + torch.atan((half_length + u) / w))
    else:
        v_safe = torch.where(v.abs() < tiny, torch.full_like(v, tiny), v)
        alpha_v = density * (torch.atan((half_length - u) / v_safe) + torch.atan((half_length + u) / v_safe))
    return _vector(*_rotate(alpha_u, alpha_v, angle))
