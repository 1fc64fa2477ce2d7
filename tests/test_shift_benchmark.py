"""benchmarks/shift.py: lenstronomy cells render at the requested peak SNR, read through the package's loader with
matching metadata, and score end to end (a network row and a binary scorer row) into JSON, tables and figures."""

import importlib.util
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from d4lenspinn.classes import NO_SUBSTRUCTURE, SUBHALOS, VORTEX
from d4lenspinn.data import batch_loader, prepare_test_data
from d4lenspinn.models import create_model
from d4lenspinn.physics import subhalo_scan

pytest.importorskip("lenstronomy")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PER_CLASS = 4


def _load(name: str):
    """A benchmark script as a module, registered under its own name (the scripts import their siblings by name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def bench():
    for name in ("_machine", "shift_cells", "shift_scoring", "shift"):
        _load(name)
    return sys.modules


@pytest.fixture(scope="module")
def renderer(bench):
    return bench["shift_cells"].Renderer()


@pytest.fixture(scope="module")
def cells(bench, renderer, tmp_path_factory):
    """Three tiny cells: the reference (SNR 30), a noiseless one and an extrapolation cell (SNR 5)."""
    sc = bench["shift_cells"]
    root = tmp_path_factory.mktemp("shift")
    chosen = [sc.REFERENCE, replace(sc.REFERENCE, name="noiseless", peak_snr=math.inf)]
    chosen.append(replace(sc.REFERENCE, name="snr_5", peak_snr=5.0, in_prior=False))
    chosen.append(replace(sc.REFERENCE, name="control", control=True))
    for cell in chosen:
        sc.write_cell(root, cell, PER_CLASS, seed=0, renderer=renderer)
    return root, chosen


def test_noise_has_the_requested_peak_snr(bench, renderer):
    """Background std (no source flux) is sigma_b and the noiseless peak is peak_snr * sigma_b, in electrons."""
    sc = bench["shift_cells"]
    rng = np.random.default_rng(0)
    draw = sc.draw_lens(sc.REFERENCE, NO_SUBSTRUCTURE, rng)
    image = renderer.noiseless(draw)
    noisy, sigma = renderer.observe(image, 30.0, rng)
    electrons = image * (30.0 * sigma / image.max())
    dark = image < 1e-3 * image.max()  # shot noise there is < 3% of the background variance
    assert dark.sum() > 1000
    assert sigma == pytest.approx(24.6875, rel=1e-4)  # Euclid VIS, 4 x 566 s (lenstronomy's ObservationConfig)
    assert np.std(noisy[dark] - electrons[dark]) == pytest.approx(sigma, rel=0.06)
    assert electrons.max() / sigma == pytest.approx(30.0)
    bright = image > 0.5 * image.max()  # shot noise adds the source's electrons to the variance
    assert np.var(noisy[bright] - electrons[bright]) > sigma**2


def test_instrument_model_ii_is_lenstronomys_euclid_vis(bench):
    """The Model II grid is Euclid VIS as lenstronomy's ObservationConfig defines it (pixel, seeing, background)."""
    from lenstronomy.SimulationAPI.observation_api import SingleBand
    from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid

    band = Euclid(band="VIS", psf_type="GAUSSIAN", coadd_years=6).kwargs_single_band()
    observation = SingleBand(**band)
    setup = bench["shift_cells"].instrument("model_ii")
    assert (setup.n_pixels, setup.pixel_scale, setup.psf_fwhm) == (64, band["pixel_scale"], band["seeing"])
    assert setup.background_sigma == pytest.approx(observation.background_noise * observation.exposure_time, rel=1e-9)
    with pytest.raises(ValueError, match="unknown instrument 'euclid'"):
        bench["shift_cells"].instrument("euclid")


@pytest.mark.parametrize(
    ("name", "theta_e", "gamma1", "main_halo_mass"),
    [("model_ii", 0.812132, 0.0316869, 0.633738e12), ("model_i", 1.28149, 0.05, 1e12)],
)
def test_control_cell_draws_the_presets_lens_and_source(bench, name, theta_e, gamma1, main_halo_mass):
    """Each instrument's control cell is DeepLenseSim's fixed lens and source; a subhalo of mass m gets theta_E^2 =
    theta_E^2 m / M_main with the preset's main-halo mass, as the broad training prior has it."""
    sc = bench["shift_cells"]
    (control,) = [c for c in sc.grid(name) if c.control]
    assert control.name == f"{name}_template" and control.peak_snr == sc.TEMPLATE_SNR[name]
    draw = sc.draw_lens(control, SUBHALOS, np.random.default_rng(0))
    main, shear, *subhalos = draw["lens"]
    assert main["theta_E"] == pytest.approx(theta_e, rel=1e-5) and (main["e1"], main["e2"]) == (0.1, 0.0)
    assert (main["center_x"], main["center_y"]) == (0.0, 0.0)
    assert shear["gamma1"] == pytest.approx(gamma1, rel=1e-5) and shear["gamma2"] == 0.0
    largest = max(s["theta_E"] for s in subhalos) ** 2
    assert largest == pytest.approx(main["theta_E"] ** 2 * draw["meta"]["largest_subhalo_mass"] / main_halo_mass)
    (source,) = draw["source"]
    assert (source["R_sersic"], source["n_sersic"], source["e1"], source["e2"]) == (0.25, 1.0, -0.1, 0.1)


def test_a_model_i_cell_is_150_pixels_at_its_snr_and_needs_its_own_renderer(bench, renderer, tmp_path):
    """Model I's grid: 150 x 150 of 0.05", the noiseless peak at peak_snr background sigmas (17.8 e-, Model I's
    rms 0.01 times 10^3.25 s); a renderer of another instrument is refused before anything is written."""
    sc = bench["shift_cells"]
    setup = sc.instrument("model_i")
    assert (setup.n_pixels, setup.pixel_scale, setup.psf_fwhm, setup.psf_truncation) == (150, 0.05, 0.087, 3.0)
    assert setup.background_sigma == pytest.approx(0.01 * 10**3.25)
    cell = sc.grid("model_i")[0]
    with pytest.raises(ValueError, match="renderer of the cell's instrument 'model_i'.*got 'model_ii'"):
        sc.write_cell(tmp_path, cell, 1, seed=0, renderer=renderer)
    assert not (tmp_path / cell.name).exists()
    model_i = sc.Renderer(setup)
    image = model_i.noiseless(sc.draw_lens(cell, VORTEX, np.random.default_rng(0)))
    noisy, sigma = model_i.observe(image, 30.0, np.random.default_rng(1))
    assert image.shape == (150, 150) and sigma == setup.background_sigma
    dark = image < 1e-3 * image.max()
    assert np.std(noisy[dark] - image[dark] * 30.0 * sigma / image.max()) == pytest.approx(sigma, rel=0.03)
    folder = sc.write_cell(tmp_path, cell, 1, seed=0, renderer=model_i)
    assert np.load(folder / "vort" / "img00000.npy").shape == (150, 150)


def test_written_cell_reads_through_the_loader_with_its_metadata(bench, cells):
    sc = bench["shift_cells"]
    root, chosen = cells
    dataset = prepare_test_data(root / "reference").test
    meta = sc.read_metadata(root / "reference")
    assert len(dataset) == 3 * PER_CLASS and set(meta) == set(sc.METADATA_FIELDS)
    assert [int(dataset[i][1]) for i in range(len(dataset))] == meta["label"].tolist()
    image = dataset[0][0]
    assert image.shape == (1, 64, 64) and float(image.min()) == 0.0 and float(image.max()) == 1.0
    assert np.all(meta["theta_e"] == 1.0) and np.all(meta["peak_snr"] == 30.0)
    subhalos, vortex = meta["label"] == SUBHALOS, meta["label"] == VORTEX
    assert np.all((meta["largest_subhalo_mass"][subhalos] >= 1e6) & (meta["largest_subhalo_mass"][subhalos] <= 1e10))
    assert np.all(meta["total_subhalo_mass"][subhalos] >= meta["largest_subhalo_mass"][subhalos])
    assert np.all((meta["n_subhalos"][subhalos] >= 10) & (meta["n_subhalos"][subhalos] <= 40))
    assert np.all((meta["vortex_mass"][vortex] >= 1e10) & (meta["vortex_mass"][vortex] <= 1e11))
    assert np.all(meta["largest_subhalo_mass"][~subhalos] == 0) and np.all(meta["vortex_mass"][~vortex] == 0)
    # the stored noise level matches the background std of the written, normalised images
    first = np.load(root / "reference" / "no" / "img00000.npy")
    frame = np.concatenate([first[:6].ravel(), first[-6:].ravel()])  # rows far from a 1" ring
    assert np.std(frame) == pytest.approx(meta["noise_sigma"][0], rel=0.15)


def test_noiseless_cell_is_the_normalised_lenstronomy_image(bench, cells, renderer):
    sc = bench["shift_cells"]
    root, chosen = cells
    meta = sc.read_metadata(root / "noiseless")
    assert np.all(meta["noise_sigma"] == 0) and np.all(np.isinf(meta["peak_snr"]))
    rng = sc.cell_rng(chosen[1], seed=0, label=VORTEX)  # redraw the first vortex image: same parameters, no noise
    expected = sc.normalise(renderer.noiseless(sc.draw_lens(chosen[1], VORTEX, rng)))
    np.testing.assert_array_equal(np.load(root / "noiseless" / "vort" / "img00000.npy"), expected)


def test_complete_cell_is_reused_and_other_settings_rewrite_it(bench, cells, renderer):
    sc = bench["shift_cells"]
    root, _ = cells
    stamp = (root / "reference" / "no" / "img00000.npy").stat().st_mtime_ns
    sc.write_cell(root, sc.REFERENCE, PER_CLASS, seed=0, renderer=renderer)
    assert (root / "reference" / "no" / "img00000.npy").stat().st_mtime_ns == stamp
    sc.write_cell(root, sc.REFERENCE, 2, seed=0, renderer=renderer)
    assert len(sc.read_metadata(root / "reference")["label"]) == 6
    assert sorted(p.name for p in (root / "reference" / "no").iterdir()) == ["img00000.npy", "img00001.npy"]
    sc.write_cell(root, sc.REFERENCE, PER_CLASS, seed=0, renderer=renderer)  # back for the other tests


class _ImageMean:
    """A binary scorer: the image's mean (a stand-in for a smooth-lens chi^2 detector)."""

    name, output = "mean", "binary"

    def __call__(self, images):
        return images.mean(dim=(1, 2, 3)).numpy()


def test_end_to_end_evaluation_writes_json_table_and_figures(bench, cells, tmp_path):
    sh, scoring = bench["shift"], bench["shift_scoring"]
    root, chosen = cells
    torch.manual_seed(0)
    model = create_model("d4_cnn", image_size=64, widths=(1, 2)).eval()
    scorers = {
        "net": (scoring.NetworkScorer("net", model, tta=False), "untrained", 0.9),
        "mean": (_ImageMean(), "mean", None),
    }
    results = sh.run_benchmark(scorers, chosen, root, tmp_path, [("net", "mean")], n_bootstrap=20)
    net, mean = results["rows"]["net"], results["rows"]["mean"]
    assert set(net["cells"]) == {"reference", "noiseless", "snr_5", "control"}  # the control is in neither pool
    assert net["pooled"]["in_prior"]["n"] == 6 * PER_CLASS and net["pooled"]["extrapolation"]["n"] == 3 * PER_CLASS
    assert 0 <= net["pooled"]["in_prior"]["macro"]["auc"] <= 1
    assert net["drop_from_own_test"] == pytest.approx(0.9 - net["pooled"]["in_prior"]["macro"]["auc"])
    assert "macro" not in mean["cells"]["reference"] and 0 <= mean["cells"]["reference"]["detection"]["auc"] <= 1
    assert set(results["paired"]["net - mean"]["in_prior"]) == {"detection"}  # macro needs two class scorers
    assert net["pooled"]["control"]["n"] == 3 * PER_CLASS  # the control cell is paired on its own
    assert net["pooled"]["control"]["macro"] == net["cells"]["control"]["macro"]
    assert set(results["paired"]["net - mean"]["control"]) == {"detection"}
    assert (tmp_path / "predictions" / "net" / "reference.npz").exists()  # reused by a rerun
    text = sh.tables(results)
    assert "pooled in-prior" in text and "| net | mean |" in text
    sensitivity = sh.run_sensitivity(scorers, root / "reference", tmp_path, n_bootstrap=20, seed=0, batch=8)
    assert set(sensitivity["net"]) == set(sh.SENSITIVITY_BINS)
    json.dumps(results | {"sensitivity": sensitivity}, default=float)
    sh.figures(results, sensitivity, tmp_path)
    assert (tmp_path / "shift_auc.png").stat().st_size > 0 and (tmp_path / "sensitivity.png").stat().st_size > 0


def test_scorer_with_the_wrong_output_shape_is_a_clear_error(bench, cells):
    scoring = bench["shift_scoring"]
    root, _ = cells

    class Wrong:
        name, output = "wrong", "classes"

        def __call__(self, images):
            return np.zeros(len(images))

    labels = bench["shift_cells"].read_metadata(root / "reference")["label"]
    with pytest.raises(ValueError, match="scorer 'wrong'.*shape"):
        scoring.score_folder(Wrong(), root / "reference", labels)


def test_a_fitted_models_physics_only_scorers(bench, cells):
    """The fit's chi^2 and the subhalo scan's largest delta chi^2 of a model that fits the lens: one finite score per
    image of a cell, the scan's equal to scanning the model's own fit; ``LensFit.select`` takes images of a fit."""
    scoring = bench["shift_scoring"]
    root, _ = cells
    model = create_model(
        "d4lenspinn_fit", image_size=64, pixel_scale=0.101, widths=(1, 2), lens_start="prior", fit_steps=2
    ).eval()
    images = next(iter(batch_loader(prepare_test_data(root / "reference").test, 3))).images
    chi2 = scoring.FitChi2Scorer("chi2", scoring.ModelFit(model))(images)
    scan = scoring.ScanScorer("scan", scoring.ModelFit(model), stride=4)(images)
    assert chi2.shape == scan.shape == (3,) and np.isfinite(scan).all() and (scan >= 0).all()
    fit, _ = model.fit_lens(images, model.preprocessing(images))
    one = fit.select(torch.tensor([1]))
    torch.testing.assert_close(one.macro.theta_e, fit.macro.theta_e[1:2])
    torch.testing.assert_close(one.normalised_residual, fit.normalised_residual[1:2])
    expected = subhalo_scan(one, model.grid, model.psf_truncation, model.fit_psf, stride=4).delta_chi2.max()
    assert scan[1] == pytest.approx(float(expected), rel=1e-6)


def test_physics_only_rows_need_no_network(bench, cells):
    """``--fits name:settings`` rows: a fit from the prior's best start, its chi^2 equal to the untrained
    prior-started model's (the same fit, no network involved); integrating the light over 3 x 3 sub-pixels is its
    own cached row; bad settings are named."""
    sh, scoring = bench["shift"], bench["shift_scoring"]
    root, _ = cells
    setup = bench["shift_cells"].instrument("model_ii")
    one_start = "steps=2,refined_starts=1,start_ellipticity=0,start_shear=0"
    specs = [f"pixel:{one_start}", f"integrated:{one_start},supersampling=3"]
    rows = sh.prior_fit_scorers(specs, setup, torch.device("cpu"), 4)
    assert list(rows) == [
        "pixel fit chi^2", "pixel subhalo scan", "integrated fit chi^2", "integrated subhalo scan"
    ]  # fmt: skip
    assert len({key for _, key, _ in rows.values()}) == 4
    images = next(iter(batch_loader(prepare_test_data(root / "reference").test, 2))).images
    model = create_model(
        "d4lenspinn_fit", image_size=64, pixel_scale=0.101, widths=(1, 2), lens_start="prior", fit_steps=2,
        psf_fwhm=setup.psf_fwhm, psf_truncation=setup.psf_truncation,
    ).eval()  # fmt: skip
    expected = scoring.FitChi2Scorer("model", scoring.ModelFit(model))(images)
    np.testing.assert_allclose(rows["pixel fit chi^2"][0](images), expected, rtol=1e-6)
    integrated = rows["integrated subhalo scan"][0](images)
    assert integrated.shape == (2,) and np.isfinite(integrated).all()
    with pytest.raises(
        SystemExit,
        match="start_shear=G, fit_psf=true.false or shot_noise=fit.ELECTRONS, got 'psf=2'",
    ):
        sh.prior_fit_scorers(["bad:psf=2"], setup, torch.device("cpu"), 0)
    with pytest.raises(SystemExit, match="shot_noise must be None, 'fit' or the background noise in electrons"):
        sh.prior_fit_scorers(["bad:shot_noise=-3"], setup, torch.device("cpu"), 0)
