"""The lensing simulator: parameter distributions, physics of the rendered images and the true convergence."""

import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from d4lenspinn.data.presets import DEEPLENSE_THETA_E, PRESETS, SIMAPI_DEFLECTION_SCALE, get_preset
from d4lenspinn.data.simulator import (
    LensSample,
    LensStream,
    add_noise,
    deflection_field,
    render_images,
    sample_lenses,
    true_convergence,
)
from d4lenspinn.physics import PixelGrid, deflection_from_kappa
from d4lenspinn.physics import profiles as P
from d4lenspinn.physics.light import sersic_brightness

SMALL = get_preset("model_ii", n_pixels=48)


def _sample(label, count=4, seed=0, preset=SMALL):
    return sample_lenses(preset, label, count, torch.Generator().manual_seed(seed))


def test_parameters_follow_the_model_i_recipe():
    preset = PRESETS["model_i"]
    lenses = _sample(1, count=500, preset=preset)
    assert torch.all(lenses.theta_e == DEEPLENSE_THETA_E) and torch.all(lenses.source_amplitude == 0.05)
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


@pytest.mark.parametrize("preset", [get_preset("model_i_broad"), get_preset("model_ii_broad")])
@pytest.mark.parametrize("label", [0, 1, 2])
def test_lens_stream_gives_the_lenses_of_one_draw_bit_for_bit(preset, label):
    """Chunks of 64 and 640 and the default all equal one ``sample_lenses`` call (pow, atan2, cos included)."""
    whole = sample_lenses(preset, label, 1000, torch.Generator().manual_seed(5))
    for chunk_size in (64, 640, None):
        stream = LensStream(preset, label, 1000, torch.Generator().manual_seed(5), chunk_size)
        chunks = list(stream)
        assert [len(c) for c in chunks][:1] == [min(1000, stream.chunk_size)] and sum(map(len, chunks)) == 1000
        joined = LensSample.concatenate(chunks)
        for field in fields(LensSample):
            assert torch.equal(getattr(joined, field.name), getattr(whole, field.name)), (chunk_size, field.name)
    assert LensStream(preset, label, 1000, torch.Generator()).chunk_size * preset.n_subhalos < 32768


def test_lens_stream_refuses_chunks_that_would_change_the_last_bits():
    with pytest.raises(ValueError, match="multiple of 64"):
        LensStream(SMALL, 0, 10, torch.Generator(), chunk_size=100)


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
    lenses, count = _sample(2, 3), 400
    x, y = PixelGrid(48, 0.101).coordinates(torch.float64)
    points = deflection_field(
        lenses, x, y, get_preset("model_ii", n_pixels=48, vortex_profile="points", vortex_points=count)
    )
    # equal points from -L to L, spacing d = 2L / (N - 1), are the midpoint rule of a segment of length N d
    longer = replace(lenses, vortex_half_length=lenses.vortex_half_length * count / (count - 1))
    segment = deflection_field(longer, x, y, get_preset("model_ii", n_pixels=48, vortex_profile="segment"))
    # away from the line itself (> 2 pixels) the two agree closely
    c, s = (f(lenses.vortex_angle).reshape(-1, 1, 1) for f in (torch.cos, torch.sin))
    along = (x * c + y * s).abs() - lenses.vortex_half_length.reshape(-1, 1, 1)
    distance = torch.hypot((y * c - x * s).abs(), along.clamp_min(0))
    away = (distance > 0.2).unsqueeze(1).expand_as(points)
    assert ((segment - points)[away].norm() / segment[away].norm()).item() < 1e-3


def test_deflection_is_the_sum_of_its_lenses():
    lenses = _sample(1, 2)
    x, y = PixelGrid(48, 0.101).coordinates(torch.float64)
    theta_e, gamma = SMALL.theta_e[0], SMALL.shear_gamma1[0]
    expected = P.sie_deflection(x, y, theta_e, lenses.lens_q[0], lenses.lens_phi[0]) + P.shear_deflection(
        x, y, gamma, 0
    )
    for k in range(25):
        theta_e = SMALL.theta_e[0] * math.sqrt(lenses.subhalo_mass[0, k].item() / SMALL.main_halo_mass)
        expected = expected + P.point_mass_deflection(x, y, theta_e, lenses.subhalo_x[0, k], lenses.subhalo_y[0, k])
    torch.testing.assert_close(deflection_field(lenses, x, y, SMALL)[0], expected)


def test_point_masses_are_the_sum_of_single_point_masses_added_into_out():
    x, y = PixelGrid(16, 0.1).coordinates(torch.float64)
    theta2 = torch.tensor([[0.01, 0.04], [0.09, 0.0]], dtype=torch.float64)
    cx = torch.tensor([[0.03, -0.2], [0.41, 0.0]], dtype=torch.float64)
    cy = torch.tensor([[0.12, 0.3], [-0.05, 0.0]], dtype=torch.float64)
    expected = torch.stack(
        [
            sum(P.point_mass_deflection(x, y, theta2[b, k].sqrt(), cx[b, k], cy[b, k]) for k in range(2))
            for b in range(2)
        ]
    )
    torch.testing.assert_close(P.point_masses_deflection(x, y, theta2, cx, cy), expected, rtol=1e-12, atol=1e-15)
    out = torch.ones(2, 2, 16, 16, dtype=torch.float64)
    assert P.point_masses_deflection(x, y, theta2, cx, cy, out=out) is out
    torch.testing.assert_close(out, expected + 1, rtol=1e-12, atol=1e-15)


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
    theta2 = (DEEPLENSE_THETA_E**2 * lenses.subhalo_mass / 1e12).sum(dim=1)
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


def test_deeplense_lens_constants_follow_from_its_cosmology():
    from astropy import constants as const
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05)
    # DeepLenseSim's mass_to_radius: luminosity distances, D_LS = D_S - D_L
    d_l, d_s = (cosmo.luminosity_distance(z).to(u.m) for z in (0.5, 1.0))
    theta = np.sqrt(4 * const.G * 1e12 * const.M_sun / const.c**2 * (d_s - d_l) / (d_l * d_s)).decompose().value
    assert theta * 206265 == pytest.approx(DEEPLENSE_THETA_E, abs=1e-5)
    # SimAPI: reduced deflections for z_s = 1.0 relative to the z_source_convention 2.5
    ratio = [
        (cosmo.angular_diameter_distance_z1z2(0.5, z) / cosmo.angular_diameter_distance(z)).value for z in (1, 2.5)
    ]
    assert ratio[0] / ratio[1] == pytest.approx(SIMAPI_DEFLECTION_SCALE, abs=1e-5)
    ii = PRESETS["model_ii"]
    assert ii.theta_e[0] == pytest.approx(DEEPLENSE_THETA_E * SIMAPI_DEFLECTION_SCALE)
    # a subhalo's theta_E^2 (prop. to its deflection) is scaled by beta, like the SIE's theta_E
    assert ii.theta_e[0] ** 2 / ii.main_halo_mass == pytest.approx(
        DEEPLENSE_THETA_E**2 / 1e12 * SIMAPI_DEFLECTION_SCALE
    )


@pytest.mark.parametrize("name", ["model_ii", "model_iii"])
def test_source_magnitude_sets_the_total_flux(name):
    preset = PRESETS[name]
    lenses = _sample(0, 3, preset=preset)
    fine = 8  # sub-pixels per pixel: the sum over the field is the flux to < 1e-3
    x, y = PixelGrid(preset.n_pixels * fine, preset.pixel_scale / fine).coordinates(torch.float64)
    m = lambda v: v.reshape(-1, 1, 1)  # noqa: E731
    light = sersic_brightness(
        x, y, m(lenses.source_amplitude), m(lenses.source_radius), m(lenses.source_sersic_n),
        m(lenses.source_q), m(lenses.source_phi),
    )  # fmt: skip
    flux = light.sum(dim=(-3, -2, -1)) / fine**2  # brightness per pixel summed over pixels: e-/s
    expected = preset.camera.counts_per_second(20.0)
    torch.testing.assert_close(flux, torch.full_like(flux, expected), rtol=2e-3, atol=0)
    assert torch.all(lenses.exposure == preset.camera.total_exposure)


def test_model_i_noise_is_poisson_counts_of_the_clipped_image():
    preset = PRESETS["model_i"]
    exposure = torch.full((4, 1, 1, 1), 2000.0)
    zero = add_noise(torch.zeros(4, 1, 150, 150), exposure, preset, torch.Generator().manual_seed(0))
    counts = zero * exposure
    assert torch.equal(counts, counts.round())  # integer counts
    # background: Poisson of max(a z, 0), z ~ N(0, 1), a = T rms = 20: 0 where z < 0, and with probability
    # E[exp(-a z) | z > 0] ~ 2 / (a sqrt(2 pi)) where z > 0; mean a / sqrt(2 pi)
    a = 2000 * 0.01
    assert (counts == 0).float().mean().item() == pytest.approx(0.5 + 1 / (a * math.sqrt(2 * math.pi)), abs=0.005)
    assert counts.mean().item() == pytest.approx(2000 * 0.01 / math.sqrt(2 * math.pi), rel=0.02)
    bright = add_noise(torch.full((4, 1, 150, 150), 0.5), exposure, preset, torch.Generator().manual_seed(0))
    # shot noise twice (Gaussian approximation, then Poisson) plus the background
    assert bright.var().item() == pytest.approx(2 * 0.5 / 2000 + 0.01**2, rel=0.03)


@pytest.mark.parametrize("name", ["model_ii", "model_iii"])
def test_camera_noise_matches_simapi(name):
    preset = PRESETS[name]
    camera, exposure = preset.camera, torch.full((4, 1, 1, 1), preset.camera.total_exposure)
    # lenstronomy data_util.bkg_noise
    sky = 10 ** (0.4 * (camera.magnitude_zero_point - camera.sky_brightness)) * preset.pixel_scale**2
    sigma = math.sqrt(camera.num_exposures * camera.read_noise**2 + camera.total_exposure * sky)
    assert camera.background_sigma(preset.pixel_scale) == pytest.approx(sigma / camera.total_exposure)
    image = torch.full((4, 1, 64, 64), 3.0)
    noisy = add_noise(image, exposure, preset, torch.Generator().manual_seed(0))
    expected = (sigma / camera.total_exposure) ** 2 + 3.0 / camera.total_exposure
    assert (noisy - image).var().item() == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_their_json_manifest(name):
    import json
    from dataclasses import asdict

    from d4lenspinn.data.presets import SimulationPreset

    preset = get_preset(name)
    assert SimulationPreset.from_dict(json.loads(json.dumps(asdict(preset)))) == preset
    older = {k: v for k, v in json.loads(json.dumps(asdict(PRESETS[name]))).items() if k != "psf_truncation"}
    assert SimulationPreset.from_dict(older).psf_truncation == 4.0  # a field added later reads as its default
