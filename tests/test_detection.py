"""The training-free detector (``d4lenspinn detect``): the read-out is the scan's maximum, where it is and its
Bonferroni bound; the bound is calibrated on smooth lenses whose fit is right; the read-out is D4-invariant (the
position a vector) for all 8 elements; failed fits leave no number; the command writes the CSV, maps and figure;
bad input is named before anything is fitted."""

import csv
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from d4lenspinn.classes import SUBHALOS
from d4lenspinn.cli import main
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import render_images, sample_lenses, true_macro_lens
from d4lenspinn.detection import PriorFit, detect_substructure, empirical_p_value
from d4lenspinn.detection_classes import PROBABILITY_COLUMNS
from d4lenspinn.detection_files import LENS_COLUMNS, NULL_COLUMN, SCAN_COLUMNS, detect_files
from d4lenspinn.io import WriterBusyError, exclusive_writer
from d4lenspinn.physics import PixelGrid, fit_smooth_lens, scan_positions
from d4lenspinn.physics.unexplained import VORTEX_ANGLES, VORTEX_HALF_LENGTHS
from d4lenspinn.symmetry import D4_ELEMENTS, transform_point, transform_scalar

PRESET = get_preset("model_ii_broad", clumpy_fraction=0.0, psf_scale=(1.0, 1.0))
GRID = PixelGrid(PRESET.n_pixels, PRESET.pixel_scale)
STRIDE = 4
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _images(label, count, seed, **preset):
    chosen = replace(PRESET, **preset)
    lenses = sample_lenses(chosen, label, count, torch.Generator().manual_seed(seed))
    return render_images(lenses, chosen, torch.Generator().manual_seed(seed + 1)), lenses


def test_the_read_out_is_the_maps_maximum_where_it_is_and_its_bound():
    images, _ = _images(1, 2, seed=0)
    fit = PriorFit(GRID, PRESET.psf_fwhm, PRESET.psf_truncation, steps=3)
    found = detect_substructure(fit(images), fit, STRIDE)
    positions = scan_positions(GRID, STRIDE)
    side = GRID.n // STRIDE
    for image in range(2):
        values = found.scan.delta_chi2[image, 0].double()
        row, column = divmod(int(values.flatten().argmax()), side)
        assert found.max_delta_chi2[image] == values.max()
        assert (found.x[image], found.y[image]) == (positions[column], positions[row])
        bound = min(1.0, side * side * 0.5 * math.erfc(math.sqrt(float(values.max()) / 2)))
        assert math.isclose(float(found.p_value[image]), bound, rel_tol=1e-9, abs_tol=1e-300)
        lines = found.vortex.delta_chi2[image].double()  # (half-lengths, angles)
        length, angle = divmod(int(lines.flatten().argmax()), VORTEX_ANGLES)
        assert found.max_delta_chi2_vortex[image] == lines.max() > 0
        assert math.isclose(found.vortex_angle[image], angle * math.pi / VORTEX_ANGLES, rel_tol=1e-12)
        theta_e = float(found.fit.macro.theta_e[image])
        assert math.isclose(found.vortex_half_length[image], VORTEX_HALF_LENGTHS[length] * theta_e, rel_tol=1e-6)


def test_the_bound_is_calibrated_where_the_smooth_model_is_right():
    """Eight smooth single-Sersic lenses at peak SNR 30, fitted from the true lens: no p-value below 0.05 (0.43 is
    the smallest here; Bonferroni over 256 positions is conservative)."""
    images, lenses = _images(0, 8, seed=3, peak_snr=(30.0, 30.0), noiseless_fraction=0.0)
    fit = fit_smooth_lens(
        images.double(), true_macro_lens(lenses), GRID, PRESET.psf_fwhm, PRESET.psf_truncation, 8, gradients=False
    )
    settings = PriorFit(GRID, PRESET.psf_fwhm, PRESET.psf_truncation)
    found = detect_substructure(fit, settings, STRIDE)
    assert bool((found.p_value > 0.05).all()), found.p_value


def test_the_read_out_is_invariant_and_the_position_moves_with_the_image():
    images, _ = _images(1, 2, seed=6, peak_snr=(50.0, 50.0), noiseless_fraction=0.0)
    fit = PriorFit(GRID, PRESET.psf_fwhm, PRESET.psf_truncation, steps=3)
    moved = torch.cat([transform_scalar(images, g) for g in D4_ELEMENTS])
    found = detect_substructure(fit(moved), fit, STRIDE)
    for index, g in enumerate(D4_ELEMENTS):
        chosen = slice(2 * index, 2 * index + 2)
        torch.testing.assert_close(found.max_delta_chi2[chosen], found.max_delta_chi2[:2], rtol=1e-4, atol=0)
        torch.testing.assert_close(found.p_value[chosen], found.p_value[:2], rtol=1e-3, atol=1e-30)
        largest = found.max_delta_chi2_vortex
        torch.testing.assert_close(largest[chosen], largest[:2], rtol=1e-4, atol=0, msg=str(g))
        x, y = transform_point(found.x[:2], found.y[:2], g)
        torch.testing.assert_close(torch.stack((found.x[chosen], found.y[chosen])), torch.stack((x, y)), msg=str(g))


def test_a_failed_fit_leaves_no_number():
    images, _ = _images(1, 2, seed=0)
    fit = PriorFit(GRID, PRESET.psf_fwhm, PRESET.psf_truncation, steps=1)
    lens_fit = fit(images)
    found = detect_substructure(lens_fit._replace(failed=torch.tensor([True, False])), fit, STRIDE)
    assert found.max_delta_chi2[0] == math.inf and math.isnan(found.x[0]) and math.isnan(found.p_value[0])
    assert found.max_delta_chi2_vortex[0] == math.inf and math.isnan(found.vortex_angle[0])
    assert math.isnan(found.vortex_half_length[0]) and found.vortex.delta_chi2[0].abs().max() == 0
    assert found.scan.delta_chi2[0].abs().max() == 0 and found.scan.delta_chi2[1].max() > 0
    assert math.isfinite(found.max_delta_chi2[1]) and 0 <= found.p_value[1] <= 1


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    assert main(["simulate", "--preset", "model_ii", "--n-per-class", "1", "--out", str(root / "sim")]) == 0
    return root


def test_the_command_writes_a_row_per_image_the_maps_and_the_figure(simulated, tmp_path):
    out, maps, figure = tmp_path / "found.csv", tmp_path / "maps.npz", tmp_path / "found.png"
    argv = ["detect", str(simulated / "sim" / "train"), "--instrument", "model_ii", "--steps", "2", "--stride", "4",
            "--refined-starts", "2", "--trial-steps", "1", "--start-ellipticity", "0.1",
            "--start-shear", "0"]  # fmt: skip
    assert main([*argv, "--out", str(out), "--maps", str(maps), "--figure", str(figure)]) == 0
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "index", *LENS_COLUMNS, *SCAN_COLUMNS]
    assert len(rows) == 3 and all(row["fit_failed"] == "0" for row in rows)
    assert all(0 <= float(row["p_value"]) <= 1 and float(row["max_delta_chi2"]) >= 0 for row in rows)
    assert all(0 <= float(row["vortex_angle_deg"]) < 180 and float(row["max_delta_chi2_vortex"]) >= 0 for row in rows)
    with np.load(maps, allow_pickle=False) as saved:
        assert saved["delta_chi2"].shape == (3, 16, 16) and saved["normalised_residual"].shape == (3, 64, 64)
        assert saved["vortex_delta_chi2"].shape == (3, len(VORTEX_HALF_LENGTHS), VORTEX_ANGLES)
        for row, lines in zip(rows, saved["vortex_delta_chi2"], strict=True):
            assert math.isclose(float(row["max_delta_chi2_vortex"]), lines.max(), rel_tol=1e-4)
        assert saved["vortex_angles_deg"][1] == 180 / VORTEX_ANGLES
        assert list(saved["path"]) == [row["path"] for row in rows]
    assert figure.stat().st_size > 0
    rates = subprocess.run(
        [sys.executable, str(BENCHMARKS / "detection_rates.py"), str(out), "--n-bootstrap", "20", "--truth",
         str(simulated / "sim" / "truth.h5"), "--against", str(out), "--classes-from", str(out),
         "--classes-figure", str(tmp_path / "classes.png")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "| found.csv | 3 |" in rates and "| found.csv: " in rates  # the whole set, then its SNR and source bins
    assert "| found.csv | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] |" in rates
    assert "classes, from a logistic regression on found.csv:\n| images | count | macro AUC |" in rates
    assert (tmp_path / "classes.png").stat().st_size > 0


def test_bad_images_are_listed_or_skipped(simulated, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good = np.load(next((simulated / "sim" / "train" / "no").glob("*.npy")))
    np.save(folder / "a_good.npy", good)
    np.save(folder / "b_constant.npy", np.ones((64, 64), np.float32))
    np.save(folder / "c_small.npy", good[:32, :32])
    out = tmp_path / "found.csv"
    with pytest.raises(Exception, match=r"2 bad input image\(s\)(.|\n)*constant(.|\n)*\(32, 32\)"):
        detect_files([folder], out, 0.16, pixel_scale=0.101, steps=1, stride=4)
    with pytest.raises(ValueError, match="stride .* must divide the image size 64, got 5"):
        detect_files([folder], out, 0.16, pixel_scale=0.101, steps=1, stride=5, skip_bad=True)
    report = detect_files([folder], out, 0.16, pixel_scale=0.101, steps=1, stride=4, skip_bad=True)
    assert report.n_images == 1 and len(report.skipped) == 2
    assert "b_constant" in (tmp_path / "found.csv.bad.txt").read_text()


def test_the_pixel_scale_is_given_or_stated_and_never_contradicted(simulated, tmp_path):
    from astropy.io import fits

    image = np.load(next((simulated / "sim" / "train" / "no").glob("*.npy")))
    hdu = fits.PrimaryHDU(image)
    hdu.header["PIXSCALE"] = 0.05
    hdu.writeto(tmp_path / "lens.fits")
    np.save(tmp_path / "lens.npy", image)
    out = tmp_path / "found.csv"
    with pytest.raises(ValueError, match="states a pixel scale of 0.05 arcsec/pixel, --pixel-scale 0.101"):
        detect_files([tmp_path / "lens.fits"], out, 0.16, pixel_scale=0.101, steps=1, stride=4)
    with pytest.raises(ValueError, match="state no pixel scale: give --pixel-scale"):
        detect_files([tmp_path / "lens.npy"], out, 0.16, steps=1, stride=4)
    assert detect_files([tmp_path / "lens.fits"], out, 0.16, steps=1, stride=4).pixel_scale == 0.05


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(steps=-1), "steps must be an integer >= 0"),
        (dict(shot_noise="sky"), "shot_noise must be None, 'fit'"),
        (dict(supersampling=0), "supersampling"),
        (dict(prior_theta_e=(1.6, 0.6)), "theta_e_range must be 0 < low <= high"),
        (dict(refined_starts=103), r"--start-shear\): refined must be an integer in \[1, 102\], got 103"),
        (dict(refined_starts=55, start_ellipticity=0, start_shear=0), r"in \[1, 54\], got 55"),
        (dict(trial_steps=1.5), "trial_steps must be an integer"),
        (dict(start_ellipticity=-0.1), r"start_ellipticity \(--start-ellipticity\) must be 0 \(none\) or an offset"),
        (dict(start_ellipticity=True), r"start_ellipticity .* in \(0, 0.8\], got True"),
        (
            dict(start_shear=0.6),
            r"start_shear \(--start-shear\) must be 0 \(none\) or an offset in \(0, 0.5\], got 0.6",
        ),
        (dict(batch_size=0), "batch_size"),
        (dict(pixel_scale=-1.0), "pixel_scale"),
        (dict(stride=0), "stride"),
    ],
)
def test_bad_settings_are_named_before_any_image_is_read(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        detect_files([tmp_path / "does-not-exist"], tmp_path / "found.csv", 0.16, **settings)


def test_the_start_flags_reach_the_fit(tmp_path, capsys):
    """The command passes --refined-starts, --start-ellipticity and --start-shear on: without the elliptical and
    sheared starts 54 candidates are left, and a shear beyond the fit's box is named with its flag."""
    argv = ["detect", str(tmp_path), "--pixel-scale", "0.1", "--psf-fwhm", "0.16"]
    assert main([*argv, "--refined-starts", "60", "--start-ellipticity", "0", "--start-shear", "0"]) == 2
    assert r"refined must be an integer in [1, 54], got 60" in capsys.readouterr().err
    assert main([*argv, "--start-shear", "0.6"]) == 2
    assert "start_shear (--start-shear) must be 0 (none) or an offset in (0, 0.5], got 0.6" in capsys.readouterr().err


def test_the_command_needs_a_psf_width(tmp_path, capsys):
    assert main(["detect", str(tmp_path), "--pixel-scale", "0.1"]) == 2
    assert "--psf-fwhm ARCSEC, or --instrument PRESET" in capsys.readouterr().err


def test_a_second_run_to_the_same_csv_is_refused(simulated, tmp_path):
    out = tmp_path / "found.csv"
    with exclusive_writer(out), pytest.raises(WriterBusyError, match="another process is writing"):
        detect_files([simulated / "sim" / "train"], out, 0.16, pixel_scale=0.101, steps=1, stride=4)
    assert not out.exists()


def test_the_empirical_p_value_ranks_among_the_null():
    null = torch.tensor([1.0, 2.0, 3.0, math.inf])
    p = empirical_p_value(torch.tensor([0.5, 2.0, 3.5, math.inf]), null)
    torch.testing.assert_close(p, torch.tensor([5.0, 4.0, 2.0, 2.0], dtype=torch.float64) / 5)
    with pytest.raises(ValueError, match="at least one largest delta chi\\^2 and no NaN"):
        empirical_p_value(torch.tensor([1.0]), torch.tensor([math.nan]))


def test_a_null_run_adds_p_null_and_a_bad_null_is_named(simulated, tmp_path):
    """A null of one smooth lens with delta chi^2 0 and one failed fit (+inf): every image with 0 < delta chi^2 ranks
    between them, p_null = (1 + 1) / (1 + 2)."""
    images, settings = simulated / "sim" / "train", dict(pixel_scale=0.101, steps=1, stride=4)
    header = ",".join(["path", "index", *LENS_COLUMNS, *SCAN_COLUMNS])
    cells = {"fit_failed": ["0", "1"], "max_delta_chi2": ["0", ""]}
    lines = [",".join(cells.get(name, ["", ""])[k] for name in header.split(",")) for k in range(2)]
    (tmp_path / "null.csv").write_text("\n".join([header, *lines]) + "\n")
    detect_files([images], tmp_path / "found.csv", 0.16, null=tmp_path / "null.csv", **settings)
    with open(tmp_path / "found.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(float(row["max_delta_chi2"]) > 0 for row in rows)
    assert [row[NULL_COLUMN] for row in rows] == ["0.66667"] * 3
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other.csv: not the CSV of a detect run"):
        detect_files([images], tmp_path / "again.csv", 0.16, null=tmp_path / "other.csv", **settings)


def _labelled_run(path: Path, failed_path: str | None = "cell/sphere/failed.npy") -> Path:
    """A detect CSV whose largest delta chi^2 orders the classes none < vortex < subhalos (as the scan orders them on
    lenstronomy's lenses), 8 rows each, and one failed fit."""
    header = ["path", "index", *LENS_COLUMNS, *SCAN_COLUMNS]
    values = {"no": (1.0, 4.0), "vort": (20.0, 40.0), "sphere": (200.0, 400.0)}
    lines = [",".join(header)]
    for name, (low, high) in values.items():
        for k, delta in enumerate(np.geomspace(low, high, 8)):
            row = {"path": f"cell/{name}/img{k}.npy", "fit_failed": "0", "max_delta_chi2": f"{delta:g}"}
            row |= {"fit_reduced_chi2": f"{1 + delta / 4000:g}", "peak_snr": "30", "p_value": "1"}
            row |= {"theta_e_arcsec": "1", "center_x_arcsec": "0", "center_y_arcsec": "0"}
            row |= {"subhalo_x_arcsec": f"{0.5 + k / 8:g}", "subhalo_y_arcsec": "0.1"}
            row |= {"max_delta_chi2_vortex": f"{delta / 2:g}"}
            lines.append(",".join(row.get(column, "") for column in header))
    if failed_path is not None:
        lines.append(",".join({"path": failed_path, "fit_failed": "1"}.get(column, "") for column in header))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_class_probabilities_read_the_middle_class_and_a_failed_fit(tmp_path):
    """The logistic regression learnt on such rows puts each class first where it lies (each class against the rest:
    AUC 1, vortex the middle one included); the failed subhalo fit gets (0, 1/2, 1/2) and still ranks as
    substructure; the table of benchmarks/detection_rates.py says the same, with and without two features (which
    add nothing here); an unknown feature is named."""
    from sklearn.metrics import roc_auc_score

    from d4lenspinn.detection_classes import class_probabilities, learn_classes, read_labelled_run

    path = _labelled_run(tmp_path / "rows.csv")
    features, failed, labels = read_labelled_run(path)
    probabilities = class_probabilities(learn_classes(path), features, failed)
    script = [sys.executable, str(BENCHMARKS / "detection_rates.py"), str(path), "--n-bootstrap", "20"]
    ablation = ["--classes-from", str(path), "--classes-without", "vortex_delta_chi2", "ring_distance"]
    rates = subprocess.run([*script, *ablation], capture_output=True, text=True)
    assert failed.sum() == 1 and np.isnan(features[failed]).all() and labels[failed] == [SUBHALOS]
    np.testing.assert_array_equal(probabilities[failed], [[0.0, 0.5, 0.5]])
    features[0, 2] = -np.inf  # a fitted light of zero peak: no finite feature, and no NaN probability
    np.testing.assert_array_equal(class_probabilities(learn_classes(path), features, failed)[0], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    assert roc_auc_score(labels, probabilities, multi_class="ovr") == 1.0
    row = "| rows.csv | 25 | 1.000 [1.000, 1.000] | 1.000 | 1.000 | 1.000 | 1.000 [1.000, 1.000] | +0.000 [+0.000,"
    assert row in rates.stdout and "without vortex_delta_chi2, ring_distance" in rates.stdout, rates.stderr
    with pytest.raises(ValueError, match=r"features must be some of \('delta_chi2'.*got \('delta_chi3',\)"):
        learn_classes(path, ("delta_chi3",))


def test_detect_adds_class_probabilities_learnt_on_a_labelled_run(simulated, tmp_path):
    """``classes_from``: each image's three probabilities after the scan's columns, the model's for the features the
    row itself holds (to its 5 digits); a learning run whose rows lie outside class folders, or whose classes are not
    all there, or that an older version made (no vortex column), is named before any image is read."""
    from d4lenspinn.detection_classes import class_probabilities, learn_classes, read_labelled_run

    settings = dict(pixel_scale=0.101, steps=1, stride=4)
    labelled = _labelled_run(tmp_path / "labelled.csv")
    detect_files([simulated / "sim" / "train"], tmp_path / "found.csv", 0.16, classes_from=labelled, **settings)
    with open(tmp_path / "found.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-3:] == list(PROBABILITY_COLUMNS) == ["p_no", "p_sphere", "p_vort"]
    written = np.array([[float(row[column]) for column in PROBABILITY_COLUMNS] for row in rows])
    features, failed, _ = read_labelled_run(tmp_path / "found.csv")
    expected = class_probabilities(learn_classes(labelled), features, failed)
    assert len(rows) == 3 and not failed.any() and np.allclose(written, expected, atol=1e-4)
    loose = _labelled_run(tmp_path / "loose.csv", failed_path="loose/failed.npy")
    lines = _labelled_run(tmp_path / "all.csv").read_text().splitlines()
    (tmp_path / "two_classes.csv").write_text("\n".join(line for line in lines if "/vort/" not in line) + "\n")
    older = [",".join(line.split(",")[: -len(SCAN_COLUMNS) + 4]) for line in lines]  # before the vortex scan
    (tmp_path / "older.csv").write_text("\n".join(older) + "\n")
    for bad, message in (
        (loose, "1 rows lie in no class folder"),
        ("two_classes.csv", "needs rows of every class"),
        ("older.csv", "no column max_delta_chi2_vortex .a run of an older version"),
    ):
        with pytest.raises(ValueError, match=rf"classes_from \(--classes-from\) .*{message}"):
            detect_files([tmp_path / "nothing"], tmp_path / "again.csv", 0.16, classes_from=tmp_path / bad, **settings)
