"""Analytic profiles: each deflection is curl-free with divergence 2 kappa, potentials differentiate to deflections."""

import math

import pytest
import torch

from d4lenspinn.physics import profiles as P

# points away from centres and from the NFW scale radius, plus two right next to u = 1 (series branch)
# (1, 7): profiles take maps (..., H, W)
_X = torch.tensor([[0.31, 1.1, -0.7, -1.9, 0.25, 1.0004, 0.99996]], dtype=torch.float64)
_Y = torch.tensor([[0.42, -0.2, 0.9, -0.6, 0.12, 0.0, 0.0]], dtype=torch.float64)
_H = 1e-5

_CASES = {
    "sis": (lambda x, y: P.sis_deflection(x, y, 1.2, 0.1, -0.2), lambda x, y: P.sis_convergence(x, y, 1.2, 0.1, -0.2)),
    "sie": (
        lambda x, y: P.sie_deflection(x, y, 1.28, 0.7, 0.4, 0.05, 0.1),
        lambda x, y: P.sie_convergence(x, y, 1.28, 0.7, 0.4, 0.05, 0.1),
    ),
    "sie_round": (lambda x, y: P.sie_deflection(x, y, 1.0, 1.0), lambda x, y: P.sie_convergence(x, y, 1.0, 1.0)),
    "nfw": (lambda x, y: P.nfw_deflection(x, y, 0.5, 1.0), lambda x, y: P.nfw_convergence(x, y, 0.5, 1.0)),
    "gaussian": (
        lambda x, y: P.gaussian_deflection(x, y, 0.8, 0.6, 0.2),
        lambda x, y: P.gaussian_convergence(x, y, 0.8, 0.6, 0.2),
    ),
    "shear": (lambda x, y: P.shear_deflection(x, y, 0.05, -0.03), lambda x, y: torch.zeros_like(x)[None]),
    # no test point lies on the segment, where its convergence is a line density
    "segment": (
        lambda x, y: P.line_segment_deflection(x, y, 0.2, 0.5, 2.5, 0.1, -0.1),
        lambda x, y: torch.zeros_like(x)[None],
    ),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_divergence_is_twice_kappa_and_curl_vanishes(name):
    alpha, kappa = _CASES[name]
    ax_dx = (alpha(_X + _H, _Y)[0] - alpha(_X - _H, _Y)[0]) / (2 * _H)
    ay_dy = (alpha(_X, _Y + _H)[1] - alpha(_X, _Y - _H)[1]) / (2 * _H)
    ay_dx = (alpha(_X + _H, _Y)[1] - alpha(_X - _H, _Y)[1]) / (2 * _H)
    ax_dy = (alpha(_X, _Y + _H)[0] - alpha(_X, _Y - _H)[0]) / (2 * _H)
    torch.testing.assert_close(ax_dx + ay_dy, 2 * kappa(_X, _Y)[0], rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(ay_dx, ax_dy, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    "alpha,psi",
    [
        (lambda x, y: P.sis_deflection(x, y, 1.2, 0.3), lambda x, y: P.sis_potential(x, y, 1.2, 0.3)),
        (
            lambda x, y: P.point_mass_deflection(x, y, 0.4, -0.1, 0.2),
            lambda x, y: P.point_mass_potential(x, y, 0.4, -0.1, 0.2),
        ),
        (lambda x, y: P.shear_deflection(x, y, 0.05, 0.02), lambda x, y: P.shear_potential(x, y, 0.05, 0.02)),
    ],
)
def test_deflection_is_the_gradient_of_the_potential(alpha, psi):
    grad_x = (psi(_X + _H, _Y) - psi(_X - _H, _Y))[0] / (2 * _H)
    grad_y = (psi(_X, _Y + _H) - psi(_X, _Y - _H))[0] / (2 * _H)
    torch.testing.assert_close(torch.stack((grad_x, grad_y)), alpha(_X, _Y), rtol=1e-7, atol=3e-8)


def test_sie_reduces_to_sis_and_rotates_with_its_angle():
    torch.testing.assert_close(P.sie_deflection(_X, _Y, 1.3, 1.0), P.sis_deflection(_X, _Y, 1.3), rtol=1e-8, atol=0)
    # rotating the lens by 90 degrees = evaluating at rotated points and rotating the deflection back
    a = P.sie_deflection(_X, _Y, 1.3, 0.6, math.pi / 2)
    b = P.sie_deflection(_Y, -_X, 1.3, 0.6, 0.0)
    torch.testing.assert_close(a, torch.stack((-b[1], b[0])), rtol=1e-10, atol=1e-12)


def test_nfw_is_continuous_through_the_scale_radius():
    u = torch.tensor([[1 - 2e-4, 1 - 1e-4, 1.0, 1 + 1e-4, 1 + 2e-4]], dtype=torch.float64)
    kappa = P.nfw_convergence(u, torch.zeros_like(u), 0.5, 1.0)[0, 0]
    alpha = P.nfw_deflection(u, torch.zeros_like(u), 0.5, 1.0)[0, 0]
    assert kappa[2].item() == pytest.approx(2 * 0.5 / 3, rel=1e-12)
    assert torch.diff(kappa).abs().max() < 1e-4 and torch.diff(alpha).abs().max() < 1e-4


def test_batched_parameters_give_batched_maps():
    x, y = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="xy")
    theta_e = torch.tensor([0.5, 1.0, 1.5]).reshape(3, 1, 1)
    assert P.sis_convergence(x, y, theta_e).shape == (3, 1, 8, 8)
    alpha = P.sie_deflection(x, y, theta_e, 0.8)
    assert alpha.shape == (3, 2, 8, 8)
    torch.testing.assert_close(alpha[1], P.sie_deflection(x, y, 1.0, 0.8))


def test_ellipticity_convention():
    q, phi = P.ellipticity_to_axis_ratio(0.1, 0.0)
    assert q.item() == pytest.approx(0.9 / 1.1) and phi.item() == 0.0
    q, phi = P.ellipticity_to_axis_ratio(0.0, 0.2)
    assert q.item() == pytest.approx(0.8 / 1.2) and phi.item() == pytest.approx(math.pi / 4)
    with pytest.raises(ValueError, match="ellipticity"):
        P.ellipticity_to_axis_ratio(0.8, 0.7)
    with pytest.raises(ValueError, match="axis ratio"):
        P.sie_deflection(_X, _Y, 1.0, 1.2)


def test_line_segment_is_the_sum_of_many_point_masses():
    count, half_length, angle, theta_m = 20000, 0.8, 0.6, 0.2
    s = ((torch.arange(count, dtype=torch.float64) + 0.5) / count * 2 - 1) * half_length
    cx, cy = 0.1 + s * math.cos(angle), -0.1 + s * math.sin(angle)
    dx, dy = _X[..., None] - cx, _Y[..., None] - cy
    r2 = dx * dx + dy * dy
    summed = torch.stack(((theta_m**2 / count) * (dx / r2).sum(-1), (theta_m**2 / count) * (dy / r2).sum(-1)))
    segment = P.line_segment_deflection(_X, _Y, theta_m, half_length, angle, 0.1, -0.1)
    torch.testing.assert_close(segment, summed, rtol=1e-6, atol=1e-9)
    # far away it is a point mass of the same total
    far_x, far_y = torch.tensor([[40.0]], dtype=torch.float64), torch.tensor([[30.0]], dtype=torch.float64)
    torch.testing.assert_close(
        P.line_segment_deflection(far_x, far_y, theta_m, half_length, angle),
        P.point_mass_deflection(far_x, far_y, theta_m),
        rtol=1e-3,
        atol=0,
    )


def test_a_softened_segment_is_the_sum_of_many_softened_point_masses():
    """With ``core`` each point of the segment deflects as ``b^2 d / (|d|^2 + core^2)`` (the subhalo scan's trial
    mass): direct summation over 20,000 of them, at points off and on the segment (finite there)."""
    count, half_length, angle, theta_m, core = 20000, 0.8, math.pi / 4, 0.2, 0.05
    x = torch.tensor([[0.3, -0.5, 0.0, 1.2, 0.21, 0.9]], dtype=torch.float64)
    y = torch.tensor([[0.3, -0.5, 0.4, -0.3, 0.2, 0.9]], dtype=torch.float64)  # the first two lie on it
    s = ((torch.arange(count, dtype=torch.float64) + 0.5) / count * 2 - 1) * half_length
    dx, dy = x[..., None] - s * math.cos(angle), y[..., None] - s * math.sin(angle)
    soft = dx * dx + dy * dy + core**2
    summed = torch.stack(((theta_m**2 / count) * (dx / soft).sum(-1), (theta_m**2 / count) * (dy / soft).sum(-1)))
    segment = P.line_segment_deflection(x, y, theta_m, half_length, angle, core=core)
    torch.testing.assert_close(segment, summed, rtol=1e-6, atol=1e-9)
