"""predict on a user's files: every format, one row per image equal to tta.predict, normalisation, bad input."""

import csv
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.cli import main
from d4lenspinn.data import DataError
from d4lenspinn.inference import predict_files
from d4lenspinn.tta import predict


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _probabilities(rows):
    return torch.tensor([[float(row[f"p_{c}"]) for c in ("no", "sphere", "vort")] for row in rows])


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_trained_model(tiny_run / "best.pt").model


@pytest.mark.slow
def test_a_thousand_npy_files_give_a_thousand_rows_equal_to_tta_predict(tiny_run, model, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((1000, 64, 64), dtype=np.float32)
    for i, image in enumerate(images):
        np.save(tmp_path / f"{i:04d}.npy", image)
    report = predict_files(tiny_run / "best.pt", [tmp_path], tmp_path / "out.csv", tta=False, batch_size=250)
    rows = _rows(tmp_path / "out.csv")
    assert report.n_images == len(rows) == 1000 and report.normalised == 0
    probabilities = _probabilities(rows)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1000), rtol=0, atol=1e-5)
    torch.testing.assert_close(probabilities, predict(model, torch.from_numpy(images)[:, None]), rtol=0, atol=1e-6)
    assert rows[0]["path"].endswith("0000.npy") and rows[0]["index"] == ""
    assert {row["predicted"] for row in rows} <= {"no", "sphere", "vort"}
    with_tta = predict_files(tiny_run / "best.pt", [tmp_path / "0000.npy", tmp_path / "0001.npy"], tmp_path / "t.csv")
    expected = predict(model, torch.from_numpy(images[:2])[:, None], tta=True)
    torch.testing.assert_close(_probabilities(_rows(with_tta.csv)), expected, rtol=0, atol=1e-6)


def test_fits_and_hdf5_inputs_and_multi_image_files(tiny_run, model, tmp_path):
    rng = np.random.default_rng(1)
    single, cube, stack = rng.random((64, 64)), rng.random((3, 64, 64)), rng.random((2, 64, 64), dtype=np.float32)
    primary = fits.PrimaryHDU(single)
    primary.header["PIXSCALE"] = 0.101
    primary.writeto(tmp_path / "single.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube)]).writeto(tmp_path / "cube.fits.gz")
    with h5py.File(tmp_path / "set.h5", "w") as f:
        f.create_group("val").create_dataset("images", data=stack)
    report = predict_files(tiny_run / "best.pt", [tmp_path], tmp_path / "out.csv", tta=False)
    rows = _rows(report.csv)
    assert [(r["path"].rsplit("/", 1)[1], r["index"]) for r in rows] == [
        ("cube.fits.gz", "0"),
        ("cube.fits.gz", "1"),
        ("cube.fits.gz", "2"),
        ("set.h5", "0"),
        ("set.h5", "1"),
        ("single.fits", ""),
    ]
    tensors = torch.from_numpy(np.concatenate([cube, stack, single[None]]).astype(np.float32))[:, None]
    torch.testing.assert_close(_probabilities(rows), predict(model, tensors), rtol=0, atol=1e-6)


def test_images_outside_the_unit_range_are_min_max_normalised_and_counted(tiny_run, model, tmp_path):
    image = np.random.default_rng(2).random((64, 64), dtype=np.float32)
    np.save(tmp_path / "counts.npy", 500 + 1000 * image)  # raw counts
    report = predict_files(tiny_run / "best.pt", [tmp_path], tmp_path / "out.csv", tta=False)
    assert report.normalised == 1
    expected = predict(model, torch.from_numpy((image - image.min()) / (image.max() - image.min()))[None, None])
    torch.testing.assert_close(_probabilities(_rows(report.csv)), expected, rtol=0, atol=1e-5)


def test_bad_inputs_are_listed_together_or_skipped_with_one_warning(tiny_run, tmp_path):
    rng = np.random.default_rng(3)
    np.save(tmp_path / "good.npy", rng.random((64, 64), dtype=np.float32))
    nan = rng.random((64, 64), dtype=np.float32)
    nan[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "small.npy", rng.random((32, 32), dtype=np.float32))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="3 bad input image") as error:
        predict_files(tiny_run / "best.pt", [tmp_path], tmp_path / "out.csv")
    message = str(error.value)
    assert "nan.npy" in message and "broken.npy" in message and "32x32 but the model takes 64x64" in message
    report = predict_files(tiny_run / "best.pt", [tmp_path], tmp_path / "out.csv", skip_bad=True, tta=False)
    assert report.n_images == 1 and len(report.skipped) == 3
    assert len((tmp_path / "out.csv.bad.txt").read_text().splitlines()) == 3


def test_scale_size_and_empty_input_errors_name_both_values(tiny_run, tmp_path):
    primary = fits.PrimaryHDU(np.zeros((64, 64)))
    primary.header["CDELT1"] = -0.05 / 3600  # 0.05"/px in degrees
    primary.writeto(tmp_path / "other_scale.fits")
    with pytest.raises(
        ValueError, match="states a pixel scale of 0.05 arcsec/pixel but the model was trained at 0.101"
    ):
        predict_files(tiny_run / "best.pt", [tmp_path / "other_scale.fits"], tmp_path / "out.csv")
    with pytest.raises(ValueError, match="--pixel-scale 0.05 arcsec/pixel differs from the 0.101"):
        predict_files(tiny_run / "best.pt", [tmp_path], tmp_path / "out.csv", pixel_scale=0.05)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        predict_files(tiny_run / "best.pt", [tmp_path / "empty"], tmp_path / "out.csv")


def test_cli_predict(tiny_run, tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.random.default_rng(4).random((64, 64), dtype=np.float32))
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(tiny_run / "best.pt"), str(tmp_path / "a.npy"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model card: d4lenspinn" in printed and f"1 predictions -> {out}" in printed and len(_rows(out)) == 1


@pytest.mark.parametrize("batch_size", [0, -5, 2.0, True])
def test_batch_size_and_a_directory_out_are_refused_before_the_checkpoint_is_read(batch_size, tmp_path):
    never_read = tmp_path / "missing.pt"
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) must be a whole number >= 1, got "):
        predict_files(never_read, [tmp_path], tmp_path / "out.csv", batch_size=batch_size)
    with pytest.raises(ValueError, match=r"out \(--out\) .* is a directory; expected the name of the CSV file"):
        predict_files(never_read, [tmp_path], tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_predict_processes_to_one_csv_one_succeeds_the_other_is_refused(tiny_run, tmp_path):
    images = np.random.default_rng(5).random((400, 64, 64), dtype=np.float32)
    for i, image in enumerate(images):
        np.save(tmp_path / f"{i:03d}.npy", image)
    out = tmp_path / "p.csv"
    argv = [sys.executable, "-m", "d4lenspinn", "predict", "--checkpoint", str(tiny_run / "best.pt"), str(tmp_path)]
    first = subprocess.Popen([*argv, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".p.csv.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.poll() is None, "the first run ended before the second could start"
    second = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and second.stderr.strip().splitlines() == [
        f"d4lenspinn predict: error: another process is writing {out} (lock {tmp_path / '.p.csv.lock'}); "
        "wait for it or choose another file"
    ]
    _, first_stderr = first.communicate(timeout=300)
    assert first.returncode == 0, first_stderr[-2000:]
    assert len(_rows(out)) == 400 and not (tmp_path / ".p.csv.lock").exists()


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """A seconds-long training of the fitted lens model on the broad prior (tiny networks, one fit step)."""
    from d4lenspinn.config import load_config
    from d4lenspinn.train import train

    root = tmp_path_factory.mktemp("fitted_run")
    overrides = [f"data.root={root / 'data'}", "data.preset=model_ii_broad", "data.n_per_class=8", "data.batch_size=6"]
    overrides += ["model.name=d4lenspinn_fit", "model.kwargs={widths: [1, 2], macro_widths: [1, 2], fit_steps: 1}"]
    overrides += ["loss.macro=0.01", "optim.epochs=1", f"out={root / 'run'}", "n_bootstrap=20"]
    return train(load_config(overrides=overrides))


def test_a_fitted_model_writes_its_lens_and_flags_images_outside_its_prior(fitted_run, tmp_path, caplog):
    from d4lenspinn.data.presets import get_preset
    from d4lenspinn.data.simulator import render_images, sample_lenses

    preset = get_preset("model_ii_broad")
    images = render_images(sample_lenses(preset, 1, 3, torch.Generator().manual_seed(0)), preset)
    np.save(tmp_path / "lenses.npy", images[:, 0].numpy())
    checkpoint = load_trained_model(fitted_run / "best.pt")
    assert checkpoint.card.training_prior == {"theta_e": [0.6, 1.6], "peak_snr": [10.0, 1000.0], "noiseless": True}
    rows = _rows(predict_files(fitted_run / "best.pt", [tmp_path / "lenses.npy"], tmp_path / "out.csv").csv)
    assert len(rows) == 3 and [row["index"] for row in rows] == ["0", "1", "2"]
    maps = checkpoint.model(images).maps
    for row, theta_e, sigma in zip(rows, maps.macro.theta_e, maps.noise_sigma, strict=True):
        assert float(row["theta_e_arcsec"]) == pytest.approx(theta_e.item(), abs=1e-4)
        assert float(row["psf_fwhm_arcsec"]) == pytest.approx(checkpoint.model.psf_fwhm, abs=1e-4)
        assert float(row["peak_snr"]) == pytest.approx(1 / sigma.item(), abs=0.1)
        assert row["fit_failed"] == "0" and row["outside_prior"] in ("0", "1")


def test_outside_prior_reads_theta_e_and_the_peak_snr_and_an_old_card_has_no_flag(fitted_run, tmp_path, caplog):
    from d4lenspinn.inference import outside_prior

    prior = {"theta_e": [0.6, 1.6], "peak_snr": [10.0, 1000.0], "noiseless": False}
    flags = outside_prior(np.array([0.5, 1.0, 1.0, 1.0, 1.7]), np.array([50, 50, 5, 2000, 50]), prior)
    assert flags.tolist() == [True, False, True, True, True]
    assert not outside_prior(np.array([1.0]), np.array([2000.0]), {**prior, "noiseless": True}).any()
    assert not outside_prior(np.array([1.0]), np.array([2.0]), {**prior, "peak_snr": None}).any()

    state = torch.load(fitted_run / "best.pt", weights_only=True)  # as a version without training_prior wrote it
    state["card"].pop("training_prior")
    torch.save(state, tmp_path / "old.pt")
    np.save(tmp_path / "image.npy", np.random.default_rng(0).random((64, 64), dtype=np.float32))
    with caplog.at_level("WARNING"):
        rows = _rows(predict_files(tmp_path / "old.pt", [tmp_path / "image.npy"], tmp_path / "out.csv").csv)
    assert rows[0]["outside_prior"] == "" and rows[0]["theta_e_arcsec"] != ""
    assert "records no training prior" in caplog.text
