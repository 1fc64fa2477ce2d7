"""The lensing simulator: parameter distributions, physics of the rendered images and the true convergence."""

import math

import numpy as np
import pytest
import torch

from d4lenspinn.data.presets import PRESETS, get_preset
from d4lenspinn.data.simulator import (
    LensSample,
    deflection_field,
    render_images,
    sample_lenses,
    true_convergence,
)
from d4lenspinn.physics import PixelGrid, deflection_from_kappa
from d4lenspinn.physics import profiles as P

SMALL = get_preset("model_ii", n_pixels=48)


def _sample(label, count=4, seed=0, preset=SMALL):
    return sample_lenses(preset, label, count, torch.Generator().manual_seed(seed))


def test_parameters_follow_the_model_i_recipe():
    preset = PRESETS["model_i"]
    lenses = _sample(1, count=500, preset=preset)
    assert torch.all(lenses.theta_e == 1.28)
    assert lenses.lens_q[0].item() == pytest.approx(0.9 / 1.1)  # e1 = 0.1
    assert torch.all(lenses.shear_gamma1 == 0.05)
    assert lenses.source_x.abs().max() <= 0.35 and lenses.source_y.abs().max() <= 0.35
    assert lenses.source_x.std() > 0.15  # uniform on (-0.35, 0.35): std 0.20
    assert torch.all((lenses.exposure >= 10**3) & (lenses.exposure <= 10**3.5))
    radius = torch.sqrt(lenses.subhalo_x**2 + lenses.subhalo_y**2)
    assert lenses.subhalo_mass.shape == (500, 25)
    assert radius.min() >= 0.25 and radius.max() <= 2.0
    assert lenses.subhalo_mass.min() >= 1e6 and lenses.subhalo_mass.max() <= 1e10


@pytest.mark.parametrize("slope", [0.9, 1.9])
def test_subhalo_masses_follow_the_power_law(slope):
    preset = get_preset("model_i", subhalo_slope=slope)
    masses = _sample(1, count=4000, preset=preset).subhalo_mass.flatten().numpy()
    counts, edges = np.histogram(np.log10(masses), bins=8, range=(6, 10))
    # dN/dlog m ~ m^(1 - slope): the log-histogram falls by (slope - 1) decades per decade of mass
    fitted = np.polyfit(0.5 * (edges[1:] + edges[:-1]), np.log10(counts), 1)[0]
    assert fitted == pytest.approx(1 - slope, abs=0.05)


def test_classes_carry_only_their_own_substructure():
    none, subhalos, vortex = _sample(0), _sample(1), _sample(2)
    assert torch.all(none.subhalo_mass == 0) and torch.all(none.vortex_mass == 0)
    assert torch.all(subhalos.subhalo_mass > 0) and torch.all(subhalos.vortex_mass == 0)
    assert torch.all(vortex.subhalo_mass == 0) and torch.all(vortex.vortex_mass == 3e10)
    # half-length L = 0.06 / (2 m_a) * 1e-22 arcsec for axion masses 1e-24 .. 1e-22 eV
    torch.testing.assert_close(vortex.vortex_half_length, 0.03e-22 / vortex.axion_mass)
    assert torch.all((vortex.axion_mass >= 1e-24) & (vortex.axion_mass <= 1e-22))
    assert torch.equal(vortex.label, torch.full((4,), 2))
    with pytest.raises(ValueError, match="label"):
        _sample(3)


def test_sampling_is_reproducible_and_seed_dependent():
    a, b, c = _sample(1, seed=5), _sample(1, seed=5), _sample(1, seed=6)
    assert all(np.array_equal(a.to_numpy()[k], b.to_numpy()[k]) for k in a.to_numpy())
    assert not torch.equal(a.subhalo_x, c.subhalo_x)


def test_einstein_ring_of_a_centred_source_sits_at_theta_e():
    preset = get_preset("model_i", lens_e1=(0.0, 0.0), shear_gamma1=(0.0, 0.0), source_offset=(0.0, 0.0))
    image = render_images(_sample(0, 1, preset=preset), preset, noise=False, normalise=False)[0, 0]
    x, y = PixelGrid(150, 0.05).coordinates()
    r = torch.sqrt(x * x + y * y)
    bins = torch.round(r / 0.05).long()
    profile = torch.zeros(bins.max() + 1).index_add_(0, bins.flatten(), image.flatten())
    profile /= torch.zeros(bins.max() + 1).index_add_(0, bins.flatten(), torch.ones(150 * 150)).clamp_min(1)
    assert profile.argmax().item() * 0.05 == pytest.approx(1.28, abs=0.05)


def test_substructure_changes_the_image_and_the_rest_is_shared():
    lenses = _sample(1, 2)
    smooth = render_images(lenses.without_substructure(), SMALL, noise=False)
    lumpy = render_images(lenses, SMALL, noise=False)
    assert (lumpy - smooth).abs().max() > 0.05
    torch.testing.assert_close(render_images(_sample(0, 2), SMALL, noise=False), smooth)  # same stream


def test_noise_levels_and_normalisation():
    lenses = _sample(0, 8)
    raw = render_images(lenses, SMALL, torch.Generator().manual_seed(1), normalise=False)
    clean = render_images(lenses, SMALL, noise=False, normalise=False)
    corner = (raw - clean)[..., :6, :6]  # no lensed light there: background noise only
    assert corner.std().item() == pytest.approx(SMALL.background_rms, rel=0.15)
    images = render_images(lenses, SMALL, torch.Generator().manual_seed(1))
    assert images.dtype == torch.float32 and images.shape == (8, 1, 48, 48)
    assert torch.all(images.amin(dim=(-2, -1)) == 0) and torch.allclose(images.amax(dim=(-2, -1)), torch.ones(8, 1))
    again = render_images(lenses, SMALL, torch.Generator().manual_seed(1))
    other = render_images(lenses, SMALL, torch.Generator().manual_seed(2))
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_vortex_as_points_approaches_the_closed_form_segment():
    lenses = _sample(2, 3)
    x, y = PixelGrid(48, 0.101).coordinates(torch.float64)
    segment = deflection_field(lenses, x, y, SMALL)
    points = deflection_field(
        lenses, x, y, get_preset("model_ii", n_pixels=48, vortex_profile="points", vortex_points=400)
    )
    # away from the line itself the two agree closely
    assert ((segment - points).norm() / segment.norm()).item() < 2e-3


def test_deflection_is_the_sum_of_its_lenses():
    lenses = _sample(1, 2)
    x, y = PixelGrid(48, 0.101).coordinates(torch.float64)
    expected = P.sie_deflection(x, y, 1.28, lenses.lens_q[0], lenses.lens_phi[0]) + P.shear_deflection(x, y, 0.05, 0.0)
    for k in range(25):
        theta_e = 1.28 * math.sqrt(lenses.subhalo_mass[0, k].item() / 1e12)
        expected = expected + P.point_mass_deflection(x, y, theta_e, lenses.subhalo_x[0, k], lenses.subhalo_y[0, k])
    torch.testing.assert_close(deflection_field(lenses, x, y, SMALL)[0], expected)


@pytest.mark.parametrize("label", [0, 1, 2])
def test_true_convergence_reproduces_the_rendering_deflection(label):
    """The Poisson solver on the true kappa map gives back the deflection the images were rendered with."""
    preset = PRESETS["model_i"]
    lenses = _sample(label, 2, preset=preset)
    kappa = true_convergence(lenses, preset)
    grid = PixelGrid(150, 0.05)
    x, y = grid.coordinates(torch.float64)
    alpha = deflection_from_kappa(kappa, grid)
    exact = deflection_field(lenses, x, y, preset) - P.shear_deflection(x, y, 0.05, 0.0)  # shear has no kappa
    r = torch.sqrt(x * x + y * y)
    ring = (r > 0.8) & (r < 1.8)  # where the arcs are
    error = ((alpha - exact)[:, :, ring].norm() / exact[:, :, ring].norm()).item()
    assert error < 0.03  # SIE alone: mass outside the field, ~2.6% (tests/physics/test_poisson.py)


def test_true_convergence_holds_the_substructure_mass():
    preset = PRESETS["model_i"]
    lenses = _sample(1, 2, preset=preset)
    kappa_sub = true_convergence(lenses, preset) - true_convergence(lenses.without_substructure(), preset)
    # sum kappa s^2 / pi = sum theta_E^2 of the point masses (all lie inside the field)
    theta2 = (1.28**2 * lenses.subhalo_mass / 1e12).sum(dim=1)
    torch.testing.assert_close(kappa_sub.sum(dim=(1, 2, 3)) * 0.05**2 / math.pi, theta2)


def test_lens_sample_round_trips_through_numpy():
    lenses = _sample(2, 3)
    back = LensSample.from_numpy(lenses.to_numpy())
    assert all(torch.equal(getattr(back, k), getattr(lenses, k)) for k in lenses.to_numpy())
    assert len(lenses.select([0, 2])) == 2


def test_presets_validate_their_fields():
    with pytest.raises(ValueError, match="unknown simulation preset"):
        get_preset("model_x")
    with pytest.raises(ValueError, match="theta_e"):
        get_preset("model_i", theta_e=(2.0, 1.0))
    with pytest.raises(ValueError, match="vortex_profile"):
        get_preset("model_i", vortex_profile="spline")
    assert get_preset("model_i", hard=True).theta_e[0] < get_preset("model_i", hard=True).theta_e[1]
