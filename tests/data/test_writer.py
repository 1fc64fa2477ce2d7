"""Writing simulated datasets: layout, truth, manifest, resumption after an interruption, HDF5, and the CLI."""

import functools
import json
from collections import namedtuple

import h5py
import numpy as np
import pytest
import torch

from d4lenspinn.cli import main
from d4lenspinn.data import LensingImageDataset, load_splits
from d4lenspinn.data import writer as writer_module
from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.simulator import (
    LensStream,
    render_images,
    sample_lenses,
    stream_seed,
    true_convergence,
)
from d4lenspinn.data.writer import SimulationInterrupted, check_simulation, read_truth, simulate_dataset

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
    with pytest.raises(SimulationInterrupted) as stop:  # a KeyboardInterrupt
        simulate_dataset(interrupted, TINY, n_per_class=6, n_val_per_class=2, seed=1, batch_size=4, progress=False)
    assert (stop.value.written, stop.value.total) == (6, 3 * 6 + 3 * 2)
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


def _old_writer_images(n_per_class: int, n_val_per_class: int, seed: int, batch_size: int) -> dict[str, np.ndarray]:
    """File name -> image as the writer made them before lenses were drawn in chunks: one draw per (split, class),
    then one render per batch with the batch's noise stream."""
    images = {}
    for split, count in (("train", n_per_class), ("val", n_val_per_class)):
        for label, name in enumerate(("no", "sphere", "vort")):
            lenses = sample_lenses(TINY, label, count, torch.Generator().manual_seed(stream_seed(seed, split, name)))
            for batch, first in enumerate(range(0, count, batch_size)):
                noise = torch.Generator().manual_seed(stream_seed(seed, split, name, "noise", batch))
                rendered = render_images(lenses.select(slice(first, first + batch_size)), TINY, noise)
                for i, image in enumerate(rendered[:, 0].numpy()):
                    images[f"{split}/{name}/{name}_{first + i:06d}.npy"] = image
    return images


def test_chunked_lenses_write_the_same_bytes_as_one_draw(tmp_path, monkeypatch):
    """Chunks of 64 lenses (three per class here) or one chunk: the same files, and the images of one draw."""
    arguments = dict(n_per_class=150, n_val_per_class=10, seed=6, batch_size=24, progress=False)
    for chunk_size in (64, 1024):
        monkeypatch.setattr(writer_module, "LensStream", functools.partial(LensStream, chunk_size=chunk_size))
        simulate_dataset(tmp_path / str(chunk_size), TINY, **arguments)
    assert _files(tmp_path / "64") == _files(tmp_path / "1024") and len(_files(tmp_path / "64")) == 3 * 160
    for name in _files(tmp_path / "64"):
        assert (tmp_path / "64" / name).read_bytes() == (tmp_path / "1024" / name).read_bytes(), name
    for split in ("train", "val"):  # the truth holds the same values (its HDF5 bytes differ in layout)
        (truth_64, files_64), (truth_1024, files_1024) = (
            read_truth(tmp_path / c / "truth.h5", split) for c in "64 1024".split()
        )
        assert files_64 == files_1024
        assert all(torch.equal(getattr(truth_64, f), getattr(truth_1024, f)) for f in truth_64.to_numpy())
    expected = _old_writer_images(150, 10, seed=6, batch_size=24)
    for name in ("train/no/no_000149.npy", "train/sphere/sphere_000070.npy", "val/vort/vort_000009.npy"):
        assert np.array_equal(np.load(tmp_path / "64" / name), expected[name]), name
    assert all(np.array_equal(np.load(tmp_path / "64" / name), image) for name, image in expected.items())
    truth, _ = read_truth(tmp_path / "64" / "truth.h5", "train")
    first_draw = sample_lenses(TINY, 1, 150, torch.Generator().manual_seed(stream_seed(6, "train", "sphere")))
    assert torch.equal(truth.subhalo_mass[150:300], first_draw.subhalo_mass)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        simulate_dataset(tmp_path, TINY, n_per_class=2, fmt="png")
    with pytest.raises(ValueError, match="n_per_class"):
        simulate_dataset(tmp_path, TINY, n_per_class=0)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(n_per_class=2, n_val_per_class=-3), "n_val_per_class must be an integer >= 1, got -3"),
        (dict(n_per_class=2, n_val_per_class=0), "n_val_per_class must be an integer >= 1, got 0"),
        (dict(n_per_class=-1), "n_per_class must be an integer >= 1, got -1"),
        (dict(n_per_class=2, batch_size=0), "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_counts_are_refused_before_any_file(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        simulate_dataset(tmp_path / "out", TINY, progress=False, **arguments)
    assert not (tmp_path / "out").exists()


def test_a_non_empty_folder_without_a_manifest_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty and holds no simulation \(no manifest.json\)"):
        simulate_dataset(tmp_path, TINY, n_per_class=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="is a file"):
        simulate_dataset(tmp_path / "notes.txt", TINY, n_per_class=2, progress=False)
    simulate_dataset(tmp_path / "empty", TINY, n_per_class=2, progress=False)  # an empty folder is fine


def test_too_little_free_space_is_refused_up_front(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(writer_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError, match=rf"not enough free space in {tmp_path}: .* bytes .* 1,000 are free"):
        simulate_dataset(tmp_path, TINY, n_per_class=2, progress=False)
    with pytest.raises(OSError, match="not enough free space"):
        simulate_dataset(tmp_path / "new" / "sim", TINY, n_per_class=2, progress=False)
    assert list(tmp_path.iterdir()) == []
    # 3 x (2 + 1) images of 32 x 32 float32 .npy (4 KiB blocks each) and their truth: a small estimate
    needed = writer_module._estimated_bytes(TINY, {"train": {"no": 2, "sphere": 2, "vort": 2}, "val": {}}, "npy")
    assert 6 * 8192 <= needed < 6 * 8192 + 6 * 1024


def test_cli_ctrl_c_says_how_to_resume_in_one_line(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "render_images", interrupt)
    out = tmp_path / "sim"
    code = main(["simulate", "--preset", "model_ii", "--n-per-class", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130
    last_line = err.splitlines()[-1]  # after the progress bar
    assert last_line == f"interrupted: 0 of 15 images written into {out}; run the same command again to resume"
    assert "Traceback" not in err


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
