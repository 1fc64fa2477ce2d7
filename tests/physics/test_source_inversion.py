"""The semi-linear source inversion: conjugate gradients against a dense solve of the same normal equations, a
source the lens maps consistently is explained to round-off, D4 equivariance for all 8 elements, clear errors."""

import pytest
import torch

from d4lenspinn.physics import MacroLens, PixelGrid, macro_deflection
from d4lenspinn.physics.lens_mapping import ray_trace
from d4lenspinn.physics.light import convolve_psf, gaussian_psf_kernel
from d4lenspinn.physics.source_inversion import _gradient_energy_operator, invert_source
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar, transform_vector

GRID, SOURCE = PixelGrid(16, 0.25), PixelGrid(8, 0.2)


def _lens(batch=2):
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return MacroLens(t(1.0, 1.2)[:batch], t(0.1, -0.05)[:batch], t(0.0, 0.08)[:batch], t(0.1, -0.1)[:batch],
                     t(-0.05, 0.1)[:batch], t(0.03, 0.0)[:batch], t(0.0, -0.04)[:batch])  # fmt: skip


def _problem():
    alpha = macro_deflection(_lens(), GRID)
    kernel = gaussian_psf_kernel(0.4, GRID.pixel_scale, 3.0, torch.float64)
    source = torch.rand(2, 1, SOURCE.n, SOURCE.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    data = convolve_psf(ray_trace(source, alpha, GRID, SOURCE), kernel)
    data = data + 0.01 * torch.randn(data.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return data, alpha, kernel, torch.tensor([0.01, 0.02], dtype=torch.float64)


def test_conjugate_gradients_solve_the_normal_equations_of_a_dense_solve():
    data, alpha, kernel, sigma = _problem()
    regularisation = 3.0
    inversion = invert_source(data, alpha, GRID, SOURCE, kernel, sigma, regularisation, iterations=300)
    m = SOURCE.n * SOURCE.n
    for b in range(2):
        unit = torch.eye(m, dtype=torch.float64).reshape(m, 1, SOURCE.n, SOURCE.n)
        columns = convolve_psf(ray_trace(unit, alpha[b : b + 1].expand(m, -1, -1, -1), GRID, SOURCE), kernel)
        design = columns.reshape(m, -1).T / sigma[b]  # (pixels, m)
        prior = _gradient_energy_operator(unit).reshape(m, m)
        normal = design.T @ design + regularisation * (prior + 1e-6 * torch.eye(m, dtype=torch.float64))
        want = torch.linalg.solve(normal, design.T @ (data[b].flatten() / sigma[b]))
        torch.testing.assert_close(inversion.source[b].flatten(), want, rtol=1e-6, atol=1e-8)
    assert inversion.relative_residual.max() < 1e-8


def test_a_source_the_lens_maps_consistently_is_explained_and_another_lens_is_not():
    data, alpha, kernel, sigma = _problem()
    right = invert_source(data, alpha, GRID, SOURCE, kernel, sigma, regularisation=1e-3, iterations=300)
    assert right.reduced_chi2.max() < 1.0  # noise of sigma 0.01: chi2 per pixel ~ 1 at most
    wrong = macro_deflection(_lens()._replace(theta_e=_lens().theta_e * 1.2), GRID)
    assert (invert_source(data, wrong, GRID, SOURCE, kernel, sigma, 1e-3, 300).reduced_chi2 > 3).all()
    torch.testing.assert_close(right.model + right.normalised_residual * sigma[:, None, None, None], data)


@pytest.mark.parametrize("iterations, tolerance", [(300, 1e-10), (60, 1e-5)])
def test_transformed_data_and_deflection_give_the_transformed_source_and_residual(iterations, tolerance):
    """Every operator commutes with D4 to round-off; conjugate gradients amplify round-off in their intermediate
    iterates (here to ~1e-7 after 60 of 64 unknowns' iterations), not in the converged solution."""
    data, alpha, kernel, sigma = _problem()
    inversion = invert_source(data, alpha, GRID, SOURCE, kernel, sigma, 10.0, iterations)
    for g in D4_ELEMENTS:
        moved = invert_source(
            transform_scalar(data, g), transform_vector(alpha, g), GRID, SOURCE, kernel, sigma, 10.0, iterations
        )
        want = transform_scalar(inversion.source, g)
        torch.testing.assert_close(moved.source, want, rtol=tolerance, atol=tolerance * want.abs().max())
        torch.testing.assert_close(
            moved.normalised_residual, transform_scalar(inversion.normalised_residual, g), rtol=0, atol=tolerance * 100
        )


def test_bad_input_gives_clear_errors():
    data, alpha, kernel, sigma = _problem()
    with pytest.raises(ValueError, match="sigma"):
        invert_source(data, alpha, GRID, SOURCE, kernel, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="regularisation"):
        invert_source(data, alpha, GRID, SOURCE, kernel, sigma, regularisation=0.0)
    with pytest.raises(ValueError, match="alpha"):
        invert_source(data, alpha[:, :1], GRID, SOURCE, kernel, sigma)
