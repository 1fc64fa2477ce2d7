"""Writing simulated datasets: layout, truth, manifest, resumption after an interruption, HDF5, and the CLI."""

import json

import h5py
import numpy as np
import pytest
import torch

from d4lenspinn.cli import main
from d4lenspinn.data import LensingImageDataset, load_splits
from d4lenspinn.data import writer as writer_module
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import true_convergence
from d4lenspinn.data.writer import check_simulation, read_truth, simulate_dataset

TINY = get_preset("model_ii", n_pixels=32)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npy"))


def test_deeplense_layout_manifest_and_truth(tmp_path):
    simulate_dataset(tmp_path, TINY, n_per_class=5, n_val_per_class=2, seed=3, batch_size=4, progress=False)
    files = _files(tmp_path)
    assert len(files) == 3 * 5 + 3 * 2
    assert "train/sphere/sphere_000004.npy" in files and "val/vort/vort_000001.npy" in files
    image = np.load(tmp_path / "train/no/no_000000.npy")
    assert image.dtype == np.float32 and image.shape == (32, 32) and image.min() == 0 and image.max() == 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["seed"] == 3 and manifest["counts"]["val"]["no"] == 2
    assert manifest["preset"]["n_pixels"] == 32
    truth, names = read_truth(tmp_path / "truth.h5", "train")
    assert names[5] == "train/sphere/sphere_000000.npy" and truth.label[5].item() == 1
    assert truth.subhalo_mass[5].gt(0).all() and truth.vortex_mass[10].item() == 3e10
    assert true_convergence(truth.select(slice(0, 2)), TINY).shape == (2, 1, 32, 32)
    dataset = LensingImageDataset.from_folder(tmp_path, split="train")
    assert len(dataset) == 15 and dataset[0][0].shape == (1, 32, 32)


def test_same_arguments_same_bytes_and_resume_after_interruption(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    simulate_dataset(reference, TINY, n_per_class=6, n_val_per_class=2, seed=1, batch_size=4, progress=False)

    interrupted = tmp_path / "interrupted"
    real_render, calls = writer_module.render_images, []

    def render_then_die(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(writer_module, "render_images", render_then_die)
    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(interrupted, TINY, n_per_class=6, n_val_per_class=2, seed=1, batch_size=4, progress=False)
    assert not json.loads((interrupted / "manifest.json").read_text())["complete"]
    assert len(_files(interrupted)) == 6  # two batches (4 + 2 images of class "no") were finished
    assert not list(interrupted.rglob("*.tmp*"))

    monkeypatch.setattr(writer_module, "render_images", real_render)
    (interrupted / "train/no/no_000001.npy").unlink()  # a lost file is re-made too
    simulate_dataset(interrupted, TINY, n_per_class=6, n_val_per_class=2, seed=1, batch_size=4, progress=False)
    assert _files(interrupted) == _files(reference)
    for name in _files(reference):
        assert np.array_equal(np.load(interrupted / name), np.load(reference / name)), name


def test_different_arguments_in_an_existing_directory_are_refused(tmp_path):
    simulate_dataset(tmp_path, TINY, n_per_class=2, seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        simulate_dataset(tmp_path, TINY, n_per_class=2, seed=1, progress=False)
    with pytest.raises(ValueError, match="counts"):
        simulate_dataset(tmp_path, TINY, n_per_class=3, seed=0, progress=False)


def test_hdf5_format_matches_npy_and_resumes(tmp_path):
    simulate_dataset(tmp_path / "npy", TINY, n_per_class=3, n_val_per_class=1, seed=2, progress=False)
    simulate_dataset(tmp_path / "h5", TINY, n_per_class=3, n_val_per_class=1, seed=2, fmt="h5", progress=False)
    path = tmp_path / "h5" / "dataset.h5"
    with h5py.File(path, "r") as f:
        assert f["train"]["rendered"][()].all() and list(f.attrs["classes"]) == ["no", "sphere", "vort"]
        np.testing.assert_array_equal(f["train"]["images"][4], np.load(tmp_path / "npy/train/sphere/sphere_000001.npy"))
        f_labels = f["val"]["labels"][()]
    assert list(f_labels) == [0, 1, 2]
    dataset = LensingImageDataset.from_hdf5(path, split="train")
    assert len(dataset) == 9
    truth, names = read_truth(path, "val")
    assert names == ["val/no/no_000000.npy", "val/sphere/sphere_000000.npy", "val/vort/vort_000000.npy"]
    simulate_dataset(tmp_path / "h5", TINY, n_per_class=3, n_val_per_class=1, seed=2, fmt="h5", progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        simulate_dataset(tmp_path, TINY, n_per_class=2, fmt="png")
    with pytest.raises(ValueError, match="n_per_class"):
        simulate_dataset(tmp_path, TINY, n_per_class=0)


def test_cli_simulate_then_read(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(["simulate", "--preset", "model_ii", "--n-per-class", "8", "--out", str(out), "--seed", "4"])
    assert code == 0 and str(out) in capsys.readouterr().out
    splits = load_splits(out, scheme="official")
    assert splits.image_size == 64 and len(splits.test) == 6
    assert main(["simulate", "--n-per-class", "8", "--out", str(out), "--seed", "5", "--preset", "model_ii"]) == 2
    assert "different simulation" in capsys.readouterr().err
    image, label = splits.train[0]
    assert image.shape == (1, 64, 64) and torch.isfinite(image).all() and label in (0, 1, 2)


def test_a_simulation_made_before_a_preset_field_existed_is_still_the_same_simulation(tmp_path):
    """A field added to the presets later (with a default that changes nothing) must not invalidate old data."""
    preset = get_preset("model_ii", n_pixels=16)
    simulate_dataset(tmp_path, preset, n_per_class=2, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["preset"]["lens_center"]  # as written before the lens centre was a preset field
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    check_simulation(tmp_path, preset, n_per_class=2)  # no error
    with pytest.raises(ValueError, match="different simulation"):
        check_simulation(tmp_path, get_preset("model_ii", n_pixels=16, lens_center=(-0.1, 0.1)), n_per_class=2)
