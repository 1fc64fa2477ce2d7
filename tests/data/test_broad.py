"""The broad presets (issue 19): ranges of every drawn parameter, peak-SNR noise, per-image PSF, clumpy sources,
truth files with and without the new fields, online simulation, and the retired ``data.hard``."""

import json
import logging
import math
from dataclasses import asdict

import pytest
import torch

from d4lenspinn.config import config_from_dict, load_config
from d4lenspinn.data.noise import add_noise, add_peak_snr_noise
from d4lenspinn.data.online import online_splits
from d4lenspinn.data.prepare import prepare_data
from d4lenspinn.data.presets import BROAD_RANGES, FAITHFUL_PRESETS, PRESETS, SimulationPreset, get_preset
from d4lenspinn.data.simulator import (
    LensSample,
    deflection_field,
    psf_kernels,
    render_images,
    sample_lenses,
    true_macro_lens,
)
from d4lenspinn.data.writer import _class_lenses, read_truth, simulate_dataset
from d4lenspinn.physics import PixelGrid
from d4lenspinn.physics.light import convolve_psf, gaussian_psf_kernel, sersic_brightness, sersic_total_flux

BROAD = get_preset("model_ii_broad")  # 64 x 64


def _lenses(label, count, preset=BROAD, seed=0):
    return sample_lenses(preset, label, count, torch.Generator().manual_seed(seed))


def _within(values, bounds, name):
    low, high = bounds
    assert values.min() >= low and values.max() <= high, (name, values.min().item(), values.max().item())


def test_broad_presets_keep_their_instrument_and_share_the_ranges():
    for name in FAITHFUL_PRESETS:
        faithful, broad = PRESETS[name], PRESETS[f"{name}_broad"]
        assert (broad.n_pixels, broad.pixel_scale, broad.psf_fwhm, broad.camera) == (
            faithful.n_pixels,
            faithful.pixel_scale,
            faithful.psf_fwhm,
            faithful.camera,
        )
        assert all(getattr(broad, field) == value for field, value in BROAD_RANGES.items())
        # the faithful presets draw none of the broad parameters
        assert (faithful.psf_scale, faithful.peak_snr, faithful.clumpy_fraction, faithful.max_knots) == (
            (1.0, 1.0),
            None,
            0.0,
            0,
        )
        assert faithful.subhalo_count == (25, 25) and faithful.vortex_mass == (3e10, 3e10)


def test_faithful_lenses_carry_the_nominal_psf_no_drawn_snr_and_no_knots():
    lenses = _lenses(1, 5, PRESETS["model_i"])
    assert torch.all(lenses.psf_fwhm == PRESETS["model_i"].psf_fwhm) and torch.all(lenses.peak_snr == 0)
    assert lenses.knot_amplitude.shape == (5, 0) and torch.all(lenses.subhalo_mass > 0)


def test_broad_draws_lie_in_their_ranges():
    none, subhalos, vortex = (_lenses(label, 2000, seed=label) for label in range(3))
    macro = true_macro_lens(none)
    _within(none.theta_e, (0.6, 1.6), "theta_e")
    for name, bounds in (("e1", (-0.2, 0.2)), ("e2", (-0.2, 0.2)), ("gamma1", (-0.1, 0.1)), ("gamma2", (-0.1, 0.1))):
        _within(getattr(macro, name), bounds, name)
    _within(torch.cat([none.lens_x, none.lens_y]), (-0.3, 0.3), "lens centre")
    assert none.theta_e.max() - none.theta_e.min() > 0.95 and none.lens_x.abs().max() > 0.28  # the whole range
    _within(none.source_radius, (0.1, 0.5), "source radius")
    _within(none.source_sersic_n, (0.5, 4.0), "Sersic n")
    source_e = (1 - none.source_q) / (1 + none.source_q)  # |e| <= sqrt(2) * 0.3
    assert source_e.max() <= math.sqrt(2) * 0.3 + 1e-12 and source_e.max() > 0.3
    _within(none.psf_fwhm / BROAD.psf_fwhm, (0.7, 1.3), "psf scale")
    finite = none.peak_snr[torch.isfinite(none.peak_snr)]
    _within(finite, (10.0, 1000.0), "peak SNR")
    assert torch.isinf(none.peak_snr).float().mean().item() == pytest.approx(0.1, abs=0.025)
    log_snr = finite.log10()  # log-uniform: mean 2, std 2 / sqrt(12)
    assert log_snr.mean().item() == pytest.approx(2.0, abs=0.05) and log_snr.std().item() == pytest.approx(
        0.577, abs=0.03
    )
    _within(none.shot_noise_fraction, (0.0, 1.0), "shot-noise fraction")
    # knots: half the sources, 2-6 each, within 1.5 half-light radii, 20-50% of the flux
    knots = (none.knot_amplitude > 0).sum(dim=1)
    clumpy = knots > 0
    assert clumpy.float().mean().item() == pytest.approx(0.5, abs=0.04)
    assert set(knots[clumpy].tolist()) == {2, 3, 4, 5, 6}
    present = none.knot_amplitude > 0
    _within(none.knot_radius[present], (0.03, 0.12), "knot radius")
    distance = torch.hypot(none.knot_x - none.source_x[:, None], none.knot_y - none.source_y[:, None])
    assert torch.all(distance <= 1.5 * none.source_radius[:, None] + 1e-12)
    knot_flux = sersic_total_flux(none.knot_amplitude, none.knot_radius, torch.ones_like(none.knot_radius)).sum(1)
    main_flux = sersic_total_flux(none.source_amplitude, none.source_radius, none.source_sersic_n)
    share = knot_flux / (knot_flux + main_flux)
    _within(share[clumpy], (0.2, 0.5), "knot flux share")
    assert torch.all(share[~clumpy] == 0)
    # substructure: 10-40 subhalos of 1e6-1e10 Msun, vortices of 1e10-1e11 Msun and log10 m_a in [-24.5, -21.5]
    count = (subhalos.subhalo_mass > 0).sum(dim=1)
    assert subhalos.subhalo_mass.shape[1] == 40 and count.min() == 10 and count.max() == 40
    _within(subhalos.subhalo_mass[subhalos.subhalo_mass > 0], (1e6, 1e10), "subhalo mass")
    _within(vortex.vortex_mass, (1e10, 1e11), "vortex mass")
    assert vortex.vortex_mass.log10().mean().item() == pytest.approx(10.5, abs=0.03)  # log-uniform
    _within(vortex.axion_mass.log10(), (-24.5, -21.5), "log10 axion mass")


@pytest.mark.parametrize("name", ["model_ii_broad", "model_iii_broad"])
def test_a_camera_source_keeps_its_magnitude_whatever_its_knots(name):
    preset = PRESETS[name]
    lenses = _lenses(0, 200, preset)
    knot_flux = sersic_total_flux(lenses.knot_amplitude, lenses.knot_radius, torch.ones_like(lenses.knot_radius))
    total = knot_flux.sum(1) + sersic_total_flux(lenses.source_amplitude, lenses.source_radius, lenses.source_sersic_n)
    expected = preset.camera.counts_per_second(20.0) * preset.pixel_scale**2
    torch.testing.assert_close(total, torch.full_like(total, expected), rtol=1e-12, atol=0)


def test_rendered_images_have_the_stored_peak_snr():
    """peak SNR = max of the noiseless image / std of the added background, measured where the source is dark."""
    preset = get_preset("model_ii_broad", noiseless_fraction=0.0)
    lenses = _lenses(1, 6, preset, seed=3)
    clean = render_images(lenses, preset, noise=False, normalise=False)
    noisy = render_images(lenses, preset, torch.Generator().manual_seed(4), normalise=False)
    peak = clean.amax(dim=(1, 2, 3))
    for i in range(len(lenses)):
        dark = clean[i] < 1e-2 * peak[i]  # shot noise there: < 1% of the background variance
        assert dark.sum() > 2000
        measured = peak[i] / (noisy[i] - clean[i])[dark].std()
        assert measured.item() == pytest.approx(lenses.peak_snr[i].item(), rel=0.05)  # ~1/sqrt(2 N) < 1.6%: > 3 sigma
    noiseless = get_preset("model_ii_broad", noiseless_fraction=1.0)
    lenses = _lenses(2, 3, noiseless)
    assert torch.all(torch.isinf(lenses.peak_snr))
    torch.testing.assert_close(
        render_images(lenses, noiseless, torch.Generator().manual_seed(0)),
        render_images(lenses, noiseless, noise=False),
        rtol=0,
        atol=0,
    )


def test_peak_snr_noise_adds_the_shot_noise_share_at_the_peak():
    image = torch.full((2, 1, 96, 96), 3.0)  # every pixel at the peak: variance (3 / snr)^2 (1 + f)
    snr, fraction = torch.tensor([20.0, 50.0], dtype=torch.float64), torch.tensor([0.0, 0.8], dtype=torch.float64)
    noisy = add_peak_snr_noise(image, snr, fraction, torch.Generator().manual_seed(0))
    variance = (noisy - image).var(dim=(1, 2, 3))
    expected = (3.0 / snr) ** 2 * (1 + fraction)
    torch.testing.assert_close(variance.double(), expected, rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="peak_snr must be > 0"):
        add_peak_snr_noise(image, torch.zeros(2, dtype=torch.float64), fraction, None)
    with pytest.raises(ValueError, match="noisy_images"):
        add_noise(image, torch.ones(2, 1, 1, 1), BROAD, None)


def test_per_image_psf_is_exactly_each_image_convolved_with_its_own_kernel():
    lenses = _lenses(0, 6)
    kernels = psf_kernels(lenses, BROAD)
    assert kernels.shape[0] == 6 and kernels.shape[1] % 2 == 1
    light = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    batched = convolve_psf(light, kernels)
    for i in range(6):
        own = gaussian_psf_kernel(lenses.psf_fwhm[i].item(), BROAD.pixel_scale, BROAD.psf_truncation)
        assert torch.equal(batched[i : i + 1], convolve_psf(light[i : i + 1], own)), i
    # a wider PSF spreads the light further: the image's peak falls
    wide, narrow = (lenses.psf_fwhm.argmax().item(), lenses.psf_fwhm.argmin().item())
    point = torch.zeros(6, 1, 64, 64)
    point[..., 32, 32] = 1
    spread = convolve_psf(point, kernels).amax(dim=(1, 2, 3))
    assert spread[wide] < spread[narrow]


def test_a_clumpy_source_renders_as_the_sum_of_its_sersics_through_its_own_psf():
    lenses = _lenses(1, 40, seed=5)
    lenses = lenses.select(torch.nonzero((lenses.knot_amplitude > 0).any(dim=1)).squeeze(1)[:3])
    assert len(lenses) == 3
    rendered = render_images(lenses, BROAD, noise=False, normalise=False).double()
    x, y = PixelGrid(BROAD.n_pixels, BROAD.pixel_scale).coordinates(torch.float64)
    for i in range(3):
        one = lenses.select([i])
        alpha = deflection_field(one, x, y, BROAD)[0]
        bx, by = x - alpha[0], y - alpha[1]
        light = sersic_brightness(
            bx, by, *(getattr(one, f).item() for f in ("source_amplitude", "source_radius", "source_sersic_n")),
            one.source_q.item(), one.source_phi.item(), one.source_x.item(), one.source_y.item(),
        )  # fmt: skip
        for k in range(one.knot_amplitude.shape[1]):
            amplitude, radius = one.knot_amplitude[0, k].item(), one.knot_radius[0, k].item()
            light = light + sersic_brightness(
                bx, by, amplitude, radius, 1.0, 1.0, 0.0, one.knot_x[0, k].item(), one.knot_y[0, k].item()
            )
        kernel = gaussian_psf_kernel(one.psf_fwhm.item(), BROAD.pixel_scale, BROAD.psf_truncation, torch.float64)
        expected = convolve_psf(light[None], kernel)[0]
        torch.testing.assert_close(rendered[i], expected, rtol=2e-5, atol=2e-5 * expected.max().item())
    without_knots = LensSample(**{**vars(lenses), "knot_amplitude": torch.zeros_like(lenses.knot_amplitude)})
    change = rendered - render_images(without_knots, BROAD, noise=False, normalise=False).double()
    assert torch.all(change.amax(dim=(1, 2, 3)) > 0.05 * rendered.amax(dim=(1, 2, 3)))  # the knots show


def test_broad_truth_round_trips_and_old_truth_reads_as_no_knots(tmp_path):
    preset = get_preset("model_ii_broad", n_pixels=16)
    simulate_dataset(tmp_path / "broad", preset, n_per_class=3, n_val_per_class=1, seed=2, progress=False)
    truth, files = read_truth(tmp_path / "broad" / "truth.h5", "train")
    drawn = LensSample.concatenate([next(iter(_class_lenses(preset, 2, "train", label, 3))) for label in range(3)])
    assert len(files) == 9 and truth.knot_amplitude.shape == (9, 6)
    assert all(torch.equal(getattr(truth, k), getattr(drawn, k)) for k in drawn.to_numpy())  # inf SNRs included
    # a truth file written before the broad parameters: no knots, the preset's PSF and noise recipe
    faithful = get_preset("model_ii", n_pixels=16)
    lenses = _lenses(1, 4, faithful)
    new_fields = ("psf_fwhm", "peak_snr", "shot_noise_fraction", "knot_x", "knot_y", "knot_radius", "knot_amplitude")
    old = LensSample.from_numpy({k: v for k, v in lenses.to_numpy().items() if k not in new_fields})
    assert old.knot_amplitude.shape == (4, 0) and torch.all(old.peak_snr == 0) and torch.isnan(old.psf_fwhm).all()
    assert torch.equal(
        render_images(old, faithful, torch.Generator().manual_seed(1)),
        render_images(lenses, faithful, torch.Generator().manual_seed(1)),
    )


def test_broad_fields_are_validated_and_round_trip_through_json():
    for field, value, message in (
        ("peak_snr", (0.0, 10.0), "peak_snr"),
        ("peak_snr", (10.0, math.inf), "peak_snr"),
        ("noiseless_fraction", 1.5, "noiseless_fraction"),
        ("psf_scale", (0.0, 1.0), "psf_scale"),
        ("psf_scale", (1.3, 0.7), "psf_scale"),
        ("clumpy_fraction", -0.1, "clumpy_fraction"),
        ("n_knots", (0, 3), "n_knots"),
        ("n_knots", (2.5, 3), "n_knots"),
        ("knot_flux_fraction", (0.2, 1.0), "knot_flux_fraction"),
        ("subhalo_count", (-1, 5), "subhalo_count"),
        ("vortex_mass", (0.0, 1e10), "vortex_mass"),
    ):
        with pytest.raises(ValueError, match=message):
            get_preset("model_ii_broad", **{field: value})
    with pytest.raises(ValueError, match="noiseless_fraction"):
        get_preset("model_ii", noiseless_fraction=0.1)  # no peak SNR: the preset's own recipe has no such share
    recorded = json.loads(json.dumps(asdict(BROAD)))
    assert SimulationPreset.from_dict(recorded) == BROAD
    legacy = {k: v for k, v in json.loads(json.dumps(asdict(PRESETS["model_i"]))).items() if k != "subhalo_count"}
    legacy.update(n_subhalos=25, vortex_mass=3e10)  # a manifest written before these fields were ranges
    assert SimulationPreset.from_dict(legacy) == PRESETS["model_i"]


def test_online_simulation_of_the_broad_prior(tmp_path):
    preset = get_preset("model_ii_broad", n_pixels=32)
    splits = online_splits(preset, n_per_class=2, n_val_per_class=1, seed=0)
    images = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert images.shape == (6, 1, 32, 32) and torch.isfinite(images).all()
    assert images.amin() == 0 and images.amax() == 1
    assert torch.equal(splits.train[4][0], images[4])  # an item is a function of (seed, epoch, index)
    truth = splits.truth["val"].targets(torch.arange(3))
    assert truth.macro.shape == (3, 7)
    overrides = ["data.source=simulate-online", "data.preset=model_ii_broad", "data.n_per_class=1"]
    online = prepare_data(load_config(overrides=[*overrides, "data.n_val_per_class=1"]).data, seed=0)
    assert online.train.preset == PRESETS["model_ii_broad"] and torch.isfinite(online.val[0][0]).all()


def test_data_hard_is_replaced_by_the_broad_presets(caplog):
    with pytest.raises(ValueError, match="model_ii_broad"):
        load_config(overrides=["data.hard=true"])
    assert load_config(overrides=["data.hard=false"]).data.preset == "model_ii"  # every older saved config has it
    with caplog.at_level(logging.WARNING):
        config = config_from_dict({"data": {"hard": True, "preset": "model_ii"}}, recorded=True)
    assert config.data.preset == "model_ii" and "retired hard variant" in caplog.text
    with pytest.raises(TypeError, match="hard"):
        get_preset("model_ii", hard=True)
