"""The lattice Green's function against exact values, its defining equation and its asymptotic series."""

import numpy as np

from d4lenspinn.physics.green import LATTICE_GREEN_OFFSET, lattice_green_table


def test_exact_values():
    table = lattice_green_table(10)
    assert table[0, 0] == 0.0
    assert abs(table[1, 0] - 0.25) < 1e-15  # 4 (G(1,0) - G(0,0)) = 1 from the equation at the origin
    assert abs(table[1, 1] - 1 / np.pi) < 1e-15  # classical closed form
    np.testing.assert_array_equal(table, table.T)


def test_discrete_laplacian_is_a_unit_delta():
    g = lattice_green_table(80)
    full = np.block([[g[::-1, ::-1][:-1, :-1], g[::-1, :][:-1]], [g[:, ::-1][:, :-1], g]])  # offsets -80..80
    lap = full[2:, 1:-1] + full[:-2, 1:-1] + full[1:-1, 2:] + full[1:-1, :-2] - 4 * full[1:-1, 1:-1]
    delta = np.zeros_like(lap)
    delta[79, 79] = 1.0
    assert np.abs(lap - delta).max() < 1e-13


def test_asymptotic_series_far_from_the_origin():
    g = lattice_green_table(120)
    m, k = np.meshgrid(np.arange(121), np.arange(121), indexing="ij")
    r, phi = np.hypot(m, k), np.arctan2(m, k)
    far = r > 40
    series = np.log(r[far]) / (2 * np.pi) + LATTICE_GREEN_OFFSET - np.cos(4 * phi[far]) / (24 * np.pi * r[far] ** 2)
    assert np.abs(g[far] - series).max() < 2e-8  # next term is O(r^-4)


def test_quadrature_is_converged():
    assert np.abs(lattice_green_table(90) - lattice_green_table(90, panels=400)).max() < 1e-14
