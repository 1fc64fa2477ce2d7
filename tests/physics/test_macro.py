"""The macro lens (SIE + external shear): exact against the closed forms and the simulator, smooth gradients through
the round limit, D4 covariance with its parameter types for all 8 elements, and the engine with a macro model."""

import math

import pytest
import torch

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import deflection_field, sample_lenses, true_macro_lens
from d4lenspinn.physics import (
    LensingEngine,
    MacroLens,
    PixelGrid,
    check_macro,
    deflection_from_kappa,
    macro_convergence,
    macro_deflection,
    macro_potential,
    ray_trace,
)
from d4lenspinn.physics import profiles as P
from d4lenspinn.symmetry import D4_ELEMENTS, transform_macro, transform_scalar, transform_spin2, transform_vector

GRID = PixelGrid(64, 0.101)


def _macro(batch=2, dtype=torch.float64, **overrides):
    values = dict(theta_e=[1.28, 0.95], e1=[0.1, -0.07], e2=[0.0, 0.13], center_x=[0.0, 0.21], center_y=[0.0, -0.17])
    values.update(gamma1=[0.05, -0.03], gamma2=[0.0, 0.06])
    values.update(overrides)
    return MacroLens(*(torch.tensor(values[name][:batch], dtype=dtype) for name in MacroLens._fields))


def test_deflection_is_the_sie_plus_shear_closed_form():
    macro = _macro()
    x, y = GRID.coordinates(torch.float64)
    for i in range(2):
        q, phi = P.ellipticity_to_axis_ratio(macro.e1[i], macro.e2[i])
        cx, cy = macro.center_x[i].item(), macro.center_y[i].item()
        expected = P.sie_deflection(x, y, macro.theta_e[i].item(), q, phi, cx, cy)
        expected = expected + P.shear_deflection(x, y, macro.gamma1[i].item(), macro.gamma2[i].item())
        torch.testing.assert_close(macro_deflection(macro, GRID)[i], expected, rtol=0, atol=1e-13)


def test_it_reproduces_the_simulator_lens_exactly():
    """The engine now has the lens every simulated image has (the shear included): deflection equal to float64
    round-off for the no-substructure class of the broad preset."""
    preset = get_preset("model_ii_broad")
    lenses = sample_lenses(preset, 0, 6, torch.Generator().manual_seed(3))
    x, y = GRID.coordinates(torch.float64)
    expected = deflection_field(lenses, x, y, preset)
    macro = true_macro_lens(lenses)
    torch.testing.assert_close(macro_deflection(macro, GRID), expected, rtol=0, atol=1e-12)


def test_potential_gradient_is_the_deflection_and_its_divergence_twice_the_convergence():
    """Central differences on a fine grid, 0.5" or more from each lens centre (the SIE is singular there): the
    differences' own error there is ~h^2 / r^2 ~ 2e-3."""
    grid = PixelGrid(200, 0.02)
    macro = _macro()
    psi, alpha, kappa = macro_potential(macro, grid), macro_deflection(macro, grid), macro_convergence(macro, grid)
    h = grid.pixel_scale
    inner = (slice(None), slice(1, -1), slice(1, -1))
    dpsi = torch.stack(
        (
            (psi[:, 0, 1:-1, 2:] - psi[:, 0, 1:-1, :-2]) / (2 * h),
            (psi[:, 0, 2:, 1:-1] - psi[:, 0, :-2, 1:-1]) / (2 * h),
        ),
        dim=1,
    )
    div = (alpha[:, 0, 1:-1, 2:] - alpha[:, 0, 1:-1, :-2] + alpha[:, 1, 2:, 1:-1] - alpha[:, 1, :-2, 1:-1]) / (2 * h)
    x, y = grid.coordinates(torch.float64)
    far = torch.hypot(x - macro.center_x[:, None, None], y - macro.center_y[:, None, None])[inner] > 0.5
    gradient_error = (dpsi - alpha[:, :, 1:-1, 1:-1]).norm(dim=1)[far] / alpha.norm(dim=1).max()
    assert gradient_error.max() < 2e-3
    assert ((div / 2 - kappa[:, 0, 1:-1, 1:-1]).abs() / kappa[:, 0, 1:-1, 1:-1])[far].max() < 5e-3


@pytest.mark.parametrize("grid", [GRID, PixelGrid(150, 0.05)], ids=["64", "150"])
@pytest.mark.parametrize("g", D4_ELEMENTS, ids=str)
def test_d4_moves_the_fields_as_the_parameters_say(grid, g):
    macro = _macro()
    moved = transform_macro(macro, g)
    torch.testing.assert_close(
        macro_deflection(moved, grid), transform_vector(macro_deflection(macro, grid), g), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        macro_potential(moved, grid), transform_scalar(macro_potential(macro, grid), g), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        macro_convergence(moved, grid), transform_scalar(macro_convergence(macro, grid), g), rtol=1e-12, atol=0
    )
    assert torch.equal(moved.theta_e, macro.theta_e)


def test_spin2_pairs_turn_twice_as_fast_and_the_mirror_conjugates():
    a, b = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64)
    for g in D4_ELEMENTS:
        new_a, new_b = transform_spin2(a, b, g)
        z = complex(0.3, 0.1)
        z = z.conjugate() if g.flip else z  # the mirror x -> -x first, then k quarter turns
        z = z * complex(math.cos(math.pi * g.rotations), math.sin(math.pi * g.rotations))  # exp(2i * k * 90deg)
        # rot90 in these pixel coordinates is a clockwise quarter turn; exp(2i*angle) is -1 for either sense
        assert (new_a.item(), new_b.item()) == pytest.approx((z.real, z.imag), abs=1e-15), str(g)


@pytest.mark.parametrize("e", [(0.12, -0.05), (0.0, 0.0), (4e-4, -2e-4)], ids=["elliptical", "round", "near round"])
def test_gradients_match_finite_differences_everywhere_including_the_round_lens(e):
    grid = PixelGrid(10, 0.3)  # 1.5" field, no pixel at the lens centre
    packed = torch.tensor([[1.1, e[0], e[1], 0.07, -0.04, 0.03, -0.02]], dtype=torch.float64, requires_grad=True)

    def fields(p):
        macro = MacroLens.from_tensor(p)
        return macro_deflection(macro, grid), macro_potential(macro, grid), macro_convergence(macro, grid)

    assert torch.autograd.gradcheck(fields, (packed,), atol=1e-6)


def test_the_round_expansion_is_second_order_accurate():
    """Below |e| = 1e-3 the first-order expansion stands in for the closed form; at |e| = 0.99e-3 they differ by
    O(|e|^2 theta_e) ~ 1e-6 arcsec, and at the switch the deflection is continuous to that order."""
    x, y = GRID.coordinates(torch.float64)
    for e1, e2 in ((0.99e-3, 0.0), (-0.5e-3, 0.8e-3)):
        macro = _macro(batch=1, e1=[e1], e2=[e2], gamma1=[0.0], gamma2=[0.0])
        q, phi = P.ellipticity_to_axis_ratio(e1, e2)
        closed = P.sie_deflection(x, y, 1.28, q, phi)
        assert (macro_deflection(macro, GRID)[0] - closed).abs().max() < 2 * 1.28 * (e1 * e1 + e2 * e2)
    below = macro_deflection(_macro(batch=1, e1=[1e-3 - 1e-12]), GRID)
    above = macro_deflection(_macro(batch=1, e1=[1e-3 + 1e-12]), GRID)
    assert (above - below).abs().max() < 2 * 1.28 * 1e-6


def test_bad_parameters_raise_naming_the_value_and_image():
    with pytest.raises(ValueError, match=r"theta_e of image 1 is -0.2; expected theta_e > 0"):
        check_macro(_macro(theta_e=[1.0, -0.2]))
    with pytest.raises(ValueError, match=r"\|e\| of image 0 is 1.1; expected \|\(e1, e2\)\| < 1"):
        macro_deflection(_macro(e1=[1.1, 0.0]), GRID)
    with pytest.raises(ValueError, match="gamma2 of image 1 is nan"):
        check_macro(_macro(gamma2=[0.0, float("nan")]))
    with pytest.raises(ValueError, match="needs theta_e"):
        MacroLens.from_values(e1=0.1)


def test_engine_adds_the_substructure_to_the_macro_lens_and_stays_d4_exact():
    engine = LensingEngine(GRID).to(torch.float64)
    macro = _macro()
    x, y = GRID.coordinates(torch.float64)
    delta = P.gaussian_convergence(x, y, 0.3, 0.12, 0.6, -0.4).expand(2, 1, -1, -1).clone()
    source = torch.exp(-0.5 * ((x - 0.1) ** 2 + (y + 0.05) ** 2) / 0.25**2).expand(2, 1, -1, -1)
    image = ray_trace(source, macro_deflection(macro, GRID) + deflection_from_kappa(delta, GRID), GRID)
    out = engine(delta, image, macro)
    torch.testing.assert_close(out.alpha, macro_deflection(macro, GRID) + deflection_from_kappa(delta, GRID))
    smooth = engine(torch.zeros_like(delta), image, macro)
    torch.testing.assert_close(smooth.alpha, macro_deflection(macro, GRID), rtol=0, atol=1e-12)
    for g in D4_ELEMENTS:
        moved = engine(transform_scalar(delta, g), transform_scalar(image, g), transform_macro(macro, g))
        torch.testing.assert_close(moved.alpha, transform_vector(out.alpha, g), rtol=0, atol=1e-10)
        torch.testing.assert_close(moved.relensed, transform_scalar(out.relensed, g), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="kappa has 1 images but the macro lens 2"):
        engine(delta[:1], image[:1], macro)
