"""Cartesian shapelets: the Hermite functions against their closed form, orthonormality in the plane, and a span
that every D4 element maps to itself (what makes a least-squares fit in it equivariant)."""

import math

import numpy as np
import pytest
import torch

from d4lenspinn.physics.shapelets import shapelet_basis, shapelet_count, shapelet_order
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar

N_MAX = 6


def _fine_grid(half=6.0, n=241):
    axis = torch.linspace(-half, half, n, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y, float(axis[1] - axis[0])


def test_each_shapelet_is_the_product_of_closed_form_hermite_functions():
    """``B_ab(x, y) = phi_a(x / s) phi_b(y / s) / s`` with ``phi_n = (2^n n! sqrt(pi))^-1/2 H_n(u) exp(-u^2/2)``
    (physicists' Hermite polynomials, numpy), in the documented order."""
    x, y, _ = _fine_grid(4.0, 33)
    scale = 0.7
    basis = shapelet_basis(x, y, scale, N_MAX)
    assert basis.shape == (shapelet_count(N_MAX), 33, 33)

    def phi(n, u):
        coefficients = np.zeros(n + 1)
        coefficients[n] = 1
        norm = (2.0**n * math.factorial(n) * math.sqrt(math.pi)) ** -0.5
        return torch.from_numpy(
            norm * np.polynomial.hermite.hermval(u.numpy(), coefficients) * np.exp(-(u.numpy() ** 2) / 2)
        )

    index = 0
    for total in range(N_MAX + 1):
        for b in range(total + 1):
            expected = phi(total - b, x / scale) * phi(b, y / scale) / scale
            torch.testing.assert_close(basis[index], expected, rtol=0, atol=1e-12)
            index += 1


def test_shapelets_are_orthonormal_in_the_plane():
    """The pixel sum ``sum B_i B_j dx^2`` on a fine grid wide enough for the Gaussian tails is the identity."""
    x, y, step = _fine_grid()
    basis = shapelet_basis(x, y, 0.8, N_MAX).flatten(1)
    gram = basis @ basis.T * step**2
    torch.testing.assert_close(gram, torch.eye(len(gram), dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_every_d4_element_maps_the_span_to_itself(g):
    """Each shapelet moved by ``g`` on a centred grid is a combination of the unmoved ones (projection residual
    zero to round-off), so a least-squares fit in their span commutes with D4."""
    x, y, step = _fine_grid()
    basis = shapelet_basis(x, y, 0.8, N_MAX)
    moved = transform_scalar(basis.unsqueeze(0), g)[0].flatten(1)
    flat = basis.flatten(1)
    coefficients = moved @ flat.T * step**2  # orthonormal basis: the projection's coefficients
    torch.testing.assert_close(coefficients @ flat, moved, rtol=0, atol=1e-10)


def test_a_negative_or_non_integer_order_is_refused():
    x, y, _ = _fine_grid(1.0, 5)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="n_max"):
            shapelet_basis(x, y, 1.0, bad)


def test_the_order_of_a_shapelet_count_inverts_it():
    assert shapelet_order(0) is None
    assert [shapelet_order(shapelet_count(n)) for n in range(12)] == list(range(12))
    with pytest.raises(ValueError, match="4 is not a number of shapelets"):
        shapelet_order(4)
