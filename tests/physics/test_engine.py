"""LensingEngine: shapes, no parameters, dtype/device moves, and exact commutation with D4."""

import pytest
import torch

from d4lenspinn.physics import LensingEngine, MacroLens, PixelGrid, deflection_from_kappa, macro_deflection, ray_trace
from d4lenspinn.physics import profiles as P
from d4lenspinn.symmetry import D4_ELEMENTS, transform_macro, transform_scalar, transform_vector


def _lens_scene(grid, dtype=torch.float32):
    """An off-centre SIE plus a subhalo-like Gaussian, and the image of a smooth source it produces."""
    x, y = grid.coordinates(torch.float64)
    kappa = P.sie_convergence(x, y, 1.0, 0.8, 0.3, 0.1, -0.05) + P.gaussian_convergence(x, y, 0.4, 0.15, 0.7, 0.6)
    kappa = kappa[None]
    source = torch.exp(-0.5 * ((x - 0.12) ** 2 + (y + 0.07) ** 2) / 0.3**2)[None, None]
    image = ray_trace(source, deflection_from_kappa(kappa, grid), grid)
    return kappa.to(dtype), image.to(dtype)


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("n,scale", [(64, 0.101), (65, 0.1)])
@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_engine_commutes_with_d4_in_float32(n, scale, g):
    grid = PixelGrid(n, scale)
    engine = LensingEngine(grid)
    kappa, image = _lens_scene(grid)
    out = engine(kappa, image)
    moved = engine(transform_scalar(kappa, g), transform_scalar(image, g))
    assert _relative(moved.psi, transform_scalar(out.psi, g)) < 1e-6
    assert _relative(moved.alpha, transform_vector(out.alpha, g)) < 1e-6
    assert _relative(moved.source, transform_scalar(out.source, g)) < 1e-6
    # coverage sums many bilinear weights: float32 rounding of alpha leaves ~1e-6 (measured 8.8e-7 here, 2e-6 at 150)
    assert _relative(moved.source_weight, transform_scalar(out.source_weight, g)) < 3e-6
    assert _relative(moved.relensed, transform_scalar(out.relensed, g)) < 1e-6


def test_engine_outputs_and_has_no_parameters():
    grid = PixelGrid(32, 0.1)
    engine = LensingEngine(grid, source_grid=PixelGrid(24, 0.1))
    assert len(list(engine.parameters())) == 0
    kappa, image = _lens_scene(grid)
    out = engine(kappa.expand(3, -1, -1, -1), image.expand(3, 2, -1, -1))
    assert out.psi.shape == (3, 1, 32, 32) and out.alpha.shape == (3, 2, 32, 32)
    assert out.source.shape == (3, 2, 24, 24) and out.source_weight.shape == (3, 1, 24, 24)
    assert out.relensed.shape == (3, 2, 32, 32)
    assert all(torch.isfinite(t).all() for t in out)


def test_engine_moves_to_float64_and_is_differentiable():
    grid = PixelGrid(12, 0.2)
    engine = LensingEngine(grid).to(torch.float64)
    kappa, image = _lens_scene(grid, torch.float64)
    kappa.requires_grad_()
    assert torch.autograd.gradcheck(lambda k: engine(k, image).relensed, (kappa,))


def test_engine_rejects_mismatched_inputs():
    engine = LensingEngine(PixelGrid(16, 0.1))
    with pytest.raises(ValueError, match="same batch size"):
        engine(torch.zeros(2, 1, 16, 16), torch.zeros(3, 1, 16, 16))
    with pytest.raises(ValueError, match="image has 15x15 pixels"):
        engine(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 15, 15))


@pytest.mark.cuda
def test_engine_on_cuda_matches_cpu():
    grid = PixelGrid(64, 0.101)
    kappa, image = _lens_scene(grid)
    cpu = LensingEngine(grid)(kappa, image)
    gpu = LensingEngine(grid).cuda()(kappa.cuda(), image.cuda())
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


def _macro(theta_e=1.0, batch=2):
    values = (theta_e, 0.08, -0.05, 0.1, -0.05, 0.03, 0.02)
    return MacroLens(*(torch.full((batch,), v) for v in values))


def test_macro_residual_vanishes_for_the_true_smooth_lens_and_not_for_a_wrong_one():
    grid = PixelGrid(64, 0.08)
    engine = LensingEngine(grid)
    x, y = grid.coordinates(torch.float64)
    source = torch.exp(-0.5 * ((x - 0.1) ** 2 + (y + 0.05) ** 2) / 0.25**2)[None, None].float()
    image = ray_trace(source, macro_deflection(_macro(), grid), grid)  # (2, 1, 64, 64), lensed by the macro lens
    exact = engine.macro_residual(image, _macro())
    wrong = engine.macro_residual(image, _macro(theta_e=1.15))
    covered = image > 0.05
    residual = lambda r: ((image - r.relensed)[covered] ** 2).mean().sqrt().item()  # noqa: E731
    assert residual(exact) < 0.02 and residual(wrong) > 3 * residual(exact)
    assert exact.spread[covered].mean() < 0.2 * wrong.spread[covered].mean()
    flat = engine.macro_residual(torch.full_like(image, 0.5), _macro())  # one value everywhere: no spread
    assert flat.spread.abs().max() < 1e-5


@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_macro_residual_commutes_with_d4(g):
    grid = PixelGrid(64, 0.101)
    engine = LensingEngine(grid)
    _, image = _lens_scene(grid)
    out = engine.macro_residual(image, _macro(batch=1))
    moved = engine.macro_residual(transform_scalar(image, g), transform_macro(_macro(batch=1), g))
    assert _relative(moved.relensed, transform_scalar(out.relensed, g)) < 1e-5
    assert _relative(moved.spread, transform_scalar(out.spread, g)) < 1e-5
