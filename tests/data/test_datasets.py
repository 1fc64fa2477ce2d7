"""Tests for d4lenspinn.data.datasets, .splits and .scan: folder/HDF5 readers, the up-front check, splits, the cache."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.cli import main
from d4lenspinn.data.datasets import LensingImageDataset
from d4lenspinn.data.formats import DataError
from d4lenspinn.data.scan import check_data
from d4lenspinn.data.scan_report import MAX_LISTED, ScanReport
from d4lenspinn.data.splits import load_splits, split_indices

N = 8  # image side


def _image(rng: np.random.Generator, shape=(N, N)) -> np.ndarray:
    return rng.random(shape).astype(np.float32)


def _make_folder(
    root: Path,
    names=CLASS_NAMES,
    n=5,
    split: str | None = "train",
    seed=0,
    channel_first=False,
    object_class: str | None = None,
) -> dict[str, np.ndarray]:
    """Write n random N x N images per class; return {file path: image}."""
    rng = np.random.default_rng(seed)
    written = {}
    base = root / split if split else root
    for name in names:
        (base / name).mkdir(parents=True)
        for i in range(n):
            img = _image(rng)
            path = base / name / f"img{i:03d}.npy"
            if name == object_class:
                obj = np.empty(2, dtype=object)
                obj[0], obj[1] = img, 1e9 * (i + 1)
                np.save(path, obj, allow_pickle=True)
            else:
                np.save(path, img[None] if channel_first and i % 2 else img)
            written[str(path)] = img
    return written


def _make_h5(path: Path, n_train=10, n_val=6, classes=CLASS_NAMES, seed=0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    data = {}
    with h5py.File(path, "w") as f:
        f.attrs["classes"] = list(classes)
        for split, n in (("train", n_train), ("val", n_val)):
            images = rng.random((n, N, N)).astype(np.float32)
            labels = np.arange(n, dtype=np.int64) % 3
            f.create_group(split).create_dataset("images", data=images)
            f[split].create_dataset("labels", data=labels)
            data[split] = (images, labels)
    return data


def _check_items(ds: LensingImageDataset, written: dict[str, np.ndarray]) -> None:
    for i, source in enumerate(ds.sources):
        image, label = ds[i]
        assert image.shape == (1, N, N) and image.dtype == torch.float32
        assert isinstance(label, int)
        np.testing.assert_array_equal(image[0].numpy(), written[str(source)])


# ------------------------------------------------------------------------------------------ reading formats
def test_folder_common_test_names(tmp_path):
    written = _make_folder(tmp_path, n=4)
    ds = LensingImageDataset.from_folder(tmp_path, "train")
    assert len(ds) == 12 and ds.image_shape == (N, N)
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.class_counts() == {"no": 4, "sphere": 4, "vort": 4}
    assert [Path(s).parent.name for s in ds.sources] == ["no"] * 4 + ["sphere"] * 4 + ["vort"] * 4
    _check_items(ds, written)


def test_folder_model2_names_and_object_arrays(tmp_path):
    written = _make_folder(tmp_path, names=("no_sub", "cdm", "axion"), n=3, object_class="axion")
    ds = LensingImageDataset.from_folder(tmp_path)
    assert ds.class_names == CLASS_NAMES
    assert {Path(s).parent.name: int(lab) for s, lab in zip(ds.sources, ds.labels, strict=True)} == {
        "no_sub": 0,
        "cdm": 1,
        "axion": 2,
    }
    _check_items(ds, written)


def test_channel_first_and_flat_shapes_mixed(tmp_path):
    written = _make_folder(tmp_path, n=4, channel_first=True)
    shapes = {np.load(p).shape for p in written}
    assert shapes == {(N, N), (1, N, N)}
    _check_items(LensingImageDataset.from_folder(tmp_path), written)


def test_root_holding_class_folders_directly(tmp_path):
    written = _make_folder(tmp_path, split=None, n=2)
    for split in ("train", None):
        ds = LensingImageDataset.from_folder(tmp_path, split)
        assert len(ds) == 6
        _check_items(ds, written)


def test_hdf5_schema_and_class_attribute_order(tmp_path):
    path = tmp_path / "sim.h5"
    data = _make_h5(path, classes=("vort", "no", "sphere"))  # stored label k means classes[k]
    for split in ("train", "val"):
        ds = LensingImageDataset.from_path(path, split)
        images, labels = data[split]
        assert len(ds) == len(labels) and ds.image_shape == (N, N)
        np.testing.assert_array_equal(ds.labels, np.array([2, 0, 1])[labels])
        for i in range(len(ds)):
            image, label = ds[i]
            np.testing.assert_array_equal(image[0].numpy(), images[i])
            assert label == ds.labels[i]
        clone = pickle.loads(pickle.dumps(ds))  # open handles are dropped: picklable for spawned workers
        np.testing.assert_array_equal(clone[1][0][0].numpy(), images[1])
        ds.close()


def test_hdf5_workers_read_lazily(tmp_path):
    path = tmp_path / "sim.h5"
    images, labels = _make_h5(path, n_train=12)["train"]
    ds = LensingImageDataset.from_hdf5(path, cache=False)
    ds[0]  # the parent opens a handle before forking; workers must open their own
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches])[:, 0].numpy(), images)
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), labels)


def test_dataloader_batches(tmp_path):
    _make_folder(tmp_path, n=5)
    ds = LensingImageDataset.from_folder(tmp_path)
    batches = list(DataLoader(ds, batch_size=4, shuffle=False, num_workers=0))
    assert [len(b[1]) for b in batches] == [4, 4, 4, 3]
    images, labels = batches[0]
    assert images.shape == (4, 1, N, N) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.cat([b[1] for b in batches]).tolist() == ds.labels.tolist()


# ------------------------------------------------------------------------------------------ splits
def test_split_indices_stratified_disjoint_reproducible():
    labels = np.repeat([0, 1, 2], [40, 20, 30])
    parts = split_indices(labels, (0.8, 0.1, 0.1), seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and set(joined.tolist()) == set(range(len(labels)))
    for part, frac in zip(parts, (0.8, 0.1, 0.1), strict=True):
        assert part.dtype == np.int64
        expected = np.round(frac * np.array([40, 20, 30]))
        np.testing.assert_array_equal(np.bincount(labels[part], minlength=3), expected)
    again = split_indices(labels, (0.8, 0.1, 0.1), seed=3)
    other = split_indices(labels, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(parts[0], other[0])


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_split_indices_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_indices([0, 1, 2], fractions)


def test_load_splits_80_10_10_folder_and_hdf5(tmp_path):
    _make_folder(tmp_path / "f", n=10)
    _make_h5(tmp_path / "sim.h5", n_train=30)
    for source in (tmp_path / "f", tmp_path / "sim.h5"):
        splits = load_splits(source, "80/10/10", seed=1)
        assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 3, 3)
        assert splits.class_names == CLASS_NAMES and splits.image_size == N
        sets = [set(map(str, d.sources)) for d in (splits.train, splits.val, splits.test)]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        for part, k in ((splits.train, 8), (splits.val, 1), (splits.test, 1)):
            assert part.class_counts() == {"no": k, "sphere": k, "vort": k}


def test_load_splits_official_uses_val_folder_as_test(tmp_path):
    _make_folder(tmp_path, n=10, split="train")
    val_written = _make_folder(tmp_path, n=3, split="val", seed=1)
    splits = load_splits(tmp_path, "official", seed=0)
    assert (len(splits.train), len(splits.val)) == (27, 3)
    assert set(map(str, splits.test.sources)) == set(val_written)
    assert all(Path(s).parts[-3] == "train" for s in splits.train.sources + splits.val.sources)
    _check_items(splits.test, val_written)


def test_load_splits_official_needs_val_folder(tmp_path):
    _make_folder(tmp_path, n=3, split="train")
    with pytest.raises(DataError, match="val"):
        load_splits(tmp_path, "official")
    with pytest.raises(ValueError, match="scheme"):
        load_splits(tmp_path, "80/20")


def test_load_splits_needs_square_images(tmp_path):
    for c, name in enumerate(CLASS_NAMES):
        (tmp_path / "train" / name).mkdir(parents=True)
        np.save(tmp_path / "train" / name / "a.npy", np.full((N, N + 2), c, np.float32))
    assert LensingImageDataset.from_folder(tmp_path)[0][0].shape == (1, N, N + 2)  # the reader itself allows it
    with pytest.raises(DataError, match="square"):
        load_splits(tmp_path)


# ------------------------------------------------------------------------------------------------ cache
def test_cache_keeps_images_and_is_not_mutable_from_outside(tmp_path):
    written = _make_folder(tmp_path, n=2)
    cached = LensingImageDataset.from_folder(tmp_path, cache=True)  # the check at construction fills the cache
    uncached = LensingImageDataset.from_folder(tmp_path, cache=False)
    assert len(cached._cache) == len(cached) and not uncached._cache
    assert LensingImageDataset.from_folder(tmp_path)._cache_flag  # tiny set: cached by default
    uncached[0]
    path = cached.sources[0]
    for p in tmp_path.rglob("*.npy"):
        p.unlink()
    report = cached.validate(progress=False)  # cached images are not read again
    assert isinstance(report, ScanReport) and report.ok and report.n_files == 6
    assert all(cached[i][0].shape == (1, N, N) for i in range(len(cached)))
    image, _ = cached[0]
    np.testing.assert_array_equal(image[0].numpy(), written[str(path)])
    image.fill_(-1.0)
    np.testing.assert_array_equal(cached[0][0][0].numpy(), written[str(path)])
    with pytest.raises(DataError, match="img000"):
        uncached[0]
    assert cached.subset([0, 1])[0][0].shape == (1, N, N)  # subsets share the cache


# ------------------------------------------------------------------------------------------ bad input
def _nan(shape=(N, N)):
    a = np.zeros(shape, np.float32)
    a[2, 3] = np.nan
    return a


_BAD_FILES = {
    "junk": (b"not a numpy file at all", "could not be read"),
    "truncated": (None, "could not be read"),
    "ndim": (np.zeros((3, N, N), np.float32), r"\(H, W\) or \(1, H, W\)"),
    "size": (np.zeros((2 * N, 2 * N), np.float32), r"size \(8, 8\)"),
    "nan": (_nan(), "NaN/inf"),
    "inf": (np.full((N, N), np.inf, np.float32), "NaN/inf"),
    "complex": (np.zeros((N, N), np.complex64), "real-valued"),
}


def _write_bad(path: Path, kind: str) -> None:
    content, _ = _BAD_FILES[kind]
    if kind == "truncated":
        np.save(path, np.zeros((N, N), np.float32))
        path.write_bytes(path.read_bytes()[:-20])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)


@pytest.mark.parametrize("kind", sorted(_BAD_FILES))
def test_bad_file_raises_naming_it(tmp_path, kind):
    _make_folder(tmp_path, n=3)
    bad = tmp_path / "train" / "sphere" / "zz_bad.npy"
    _write_bad(bad, kind)
    with pytest.raises(DataError, match=f"1 problem[^$]*zz_bad.npy.*{_BAD_FILES[kind][1]}"):
        LensingImageDataset.from_folder(tmp_path)  # checked when built
    ds = LensingImageDataset.from_folder(tmp_path, check=False, image_shape=(N, N))
    index = [str(s) for s in ds.sources].index(str(bad))
    with pytest.raises(DataError, match=f"zz_bad.npy.*{_BAD_FILES[kind][1]}"):
        ds[index]  # and when read, should it break later
    report = ds.scan(progress=False)
    assert report.n_files == 10 and report.n_bad == 1 and re.search(f"zz_bad.npy.*{_BAD_FILES[kind][1]}", report.bad[0])
    with pytest.raises(DataError, match="zz_bad.npy"):
        ds.validate(progress=False)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: (root / "train" / "cdm_extra").mkdir(), "cdm_extra: unknown class folder"),
        (lambda root: [p.unlink() for p in (root / "train" / "vort").iterdir()], "vort: class folder holds"),
        (lambda root: (root / "train" / "no_sub").mkdir(), "no_sub and .*no both hold class 'no'"),
        (lambda root: [p.rename(root / p.name) for p in (root / "train" / "no").iterdir()], "no class"),
    ],
    ids=["unknown", "empty", "duplicate", "missing"],
)
def test_bad_folder_layout_raises(tmp_path, setup, match):
    _make_folder(tmp_path, n=2)
    setup(tmp_path)
    if not any((tmp_path / "train" / "no").iterdir()):
        (tmp_path / "train" / "no").rmdir()
    with pytest.raises(DataError, match=match):
        LensingImageDataset.from_folder(tmp_path)


def test_missing_folder_and_split(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        LensingImageDataset.from_folder(tmp_path / "nope")
    _make_folder(tmp_path, n=1)
    with pytest.raises(DataError, match="split folder 'test'"):
        LensingImageDataset.from_folder(tmp_path, "test")


def test_skip_bad_drops_and_warns_with_count(tmp_path):
    written = _make_folder(tmp_path, n=4)
    _write_bad(tmp_path / "train" / "no" / "aa_bad.npy", "size")  # sorts first: the majority size still wins
    _write_bad(tmp_path / "train" / "vort" / "zz_bad.npy", "nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = LensingImageDataset.from_folder(tmp_path, skip_bad=True)
    assert len(caught) == 1, [str(w.message) for w in caught]  # one warning, not one per file
    assert re.search(r"skipped 2 bad image\(s\) of 14[^$]*aa_bad.npy[^$]*zz_bad.npy", str(caught[0].message))
    assert len(ds) == 12 and ds.image_shape == (N, N)
    assert [f.split(":")[0] for f in ds.bad_files] == [
        str(tmp_path / "train" / "no" / "aa_bad.npy"),
        str(tmp_path / "train" / "vort" / "zz_bad.npy"),
    ]
    assert ds.validate(progress=False).ok  # nothing left to drop, no second warning
    _check_items(ds, written)


def test_skip_bad_with_nothing_left_raises(tmp_path):
    _make_folder(tmp_path, n=1)
    for p in (tmp_path / "train").rglob("*.npy"):
        _write_bad(p, "nan")
    with pytest.warns(UserWarning, match="skipped 3"), pytest.raises(DataError, match="all 3 images are bad"):
        LensingImageDataset.from_folder(tmp_path, skip_bad=True)


def test_hdf5_bad_inputs(tmp_path):
    path = tmp_path / "sim.h5"
    _make_h5(path)
    with h5py.File(path, "a") as f:
        f["train"]["images"][3, 1, 1] = np.nan
    with pytest.raises(DataError, match=r"sim\.h5:/train/images\[3\].*NaN"):
        LensingImageDataset.from_hdf5(path)
    ds = LensingImageDataset.from_hdf5(path, check=False)
    with pytest.raises(DataError, match=r"sim\.h5:/train/images\[3\].*NaN"):
        ds[3]
    ds.close()
    with pytest.warns(UserWarning, match="skipped 1"):
        skipped = LensingImageDataset.from_hdf5(path, skip_bad=True)
    assert len(skipped) == 9 and skipped.bad_files[0].startswith(f"{path}:/train/images[3]: ")
    assert not skipped._h5  # the check closed its handles (DataLoader workers open their own)
    with pytest.raises(DataError, match="group 'test'"):
        LensingImageDataset.from_hdf5(path, "test")
    with h5py.File(path, "a") as f:
        del f.attrs["classes"]
    with pytest.raises(DataError, match="sim.h5: missing file attribute 'classes'"):
        LensingImageDataset.from_hdf5(path)
    (tmp_path / "junk.h5").write_bytes(b"nope")
    with pytest.raises(DataError, match="junk.h5: could not be opened"):
        LensingImageDataset.from_hdf5(tmp_path / "junk.h5")


# ------------------------------------------------------------------------------------------ the up-front scan
def _three_bad(root: Path, val: bool = False) -> list[str]:
    """A folder with a corrupt file, a NaN image and a mis-shaped image; returns their paths."""
    _make_folder(root, n=4)
    if val:
        _make_folder(root, n=2, split="val", seed=1)
    bad = [root / "train" / name for name in ("no/corrupt.npy", "sphere/nan.npy", "vort/ndim.npy")]
    for path, kind in zip(bad, ("truncated", "nan", "ndim"), strict=True):
        _write_bad(path, kind)
    return [str(p) for p in bad]


def _assert_names_all(message: str, bad: list[str]) -> None:
    for path, kind in zip(bad, ("truncated", "nan", "ndim"), strict=True):
        line = next((line for line in message.splitlines() if path in line), None)
        assert line is not None, f"{path} not named in:\n{message}"
        assert re.search(_BAD_FILES[kind][1], line), line


def test_scan_reports_all_bad_files_in_one_error(tmp_path):
    bad = _three_bad(tmp_path)
    with pytest.raises(DataError) as info:
        load_splits(tmp_path, "80/10/10")
    message = str(info.value)
    assert message.startswith("3 problem(s) in ") and "15 files checked" in message and "skip_bad" in message
    _assert_names_all(message, bad)


def test_scan_fails_training_before_the_first_step(tmp_path, monkeypatch, capsys):
    import d4lenspinn.train

    bad = _three_bad(tmp_path / "data")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built: the data check came too late")

    monkeypatch.setattr(d4lenspinn.train, "create_model", no_model)
    argv = ["train", "--set", f"data.source={tmp_path / 'data'}", "--set", f"out={tmp_path / 'run'}"]
    assert main([*argv, "--set", "device=cpu"]) == 2
    _assert_names_all(capsys.readouterr().err, bad)

    class Reached(Exception):
        """Raised where the model is built: the data check passed."""

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(d4lenspinn.train, "create_model", reached)
    with pytest.warns(UserWarning, match=r"skipped 3 bad image\(s\) of 15"), pytest.raises(Reached):
        main([*argv, "--set", "device=cpu", "--skip-bad"])  # --skip-bad: data.skip_bad=true


def test_skip_bad_drops_all_with_one_warning_and_lists_them(tmp_path):
    bad = _three_bad(tmp_path, val=True)
    (tmp_path / "val" / "junk").mkdir()  # an unknown class folder is part of the same report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits(tmp_path, "official", skip_bad=True)
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert message.startswith("skipped 3 bad image(s) of 21 and 1 other problem(s) in ")
    _assert_names_all(message, bad)
    assert len(splits.bad_files) == 4 and [f.split(": ")[0] for f in splits.bad_files[:3]] == bad
    assert splits.bad_files[3].startswith(f"{tmp_path / 'val' / 'junk'}: unknown class folder")
    assert len(splits.train) + len(splits.val) == 12 and len(splits.test) == 6
    assert splits.scan.n_files == 21 and splits.scan.n_bad == 4 and len(splits.scan.parts) == 2
    _write_bad(tmp_path / "val" / "no" / "nan.npy", "nan")
    with pytest.raises(DataError, match=r"5 problem[^$]*train.no.corrupt[^$]*val.junk: unknown[^$]*val.no.nan\.npy"):
        load_splits(tmp_path, "official")  # without skip_bad: train and val in one error


def test_many_bad_files_name_the_first_few_and_count_the_rest(tmp_path):
    _make_folder(tmp_path, n=2)
    for i in range(MAX_LISTED + 15):
        _write_bad(tmp_path / "train" / "vort" / f"bad{i:02d}.npy", "nan")
    with pytest.raises(DataError) as info:
        LensingImageDataset.from_folder(tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{MAX_LISTED + 15} problem(s)")
    named = [line for line in lines if "bad" in line and ".npy" in line]
    assert len(named) == MAX_LISTED and "bad00.npy" in named[0] and f"bad{MAX_LISTED - 1:02d}.npy" in named[-1]
    assert "  ... and 15 more" in lines
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = LensingImageDataset.from_folder(tmp_path, skip_bad=True)
    assert len(caught) == 1 and "... and 15 more" in str(caught[0].message)
    assert len(ds) == 6 and len(ds.bad_files) == MAX_LISTED + 15


def test_check_data_report(tmp_path):
    bad = _three_bad(tmp_path, val=True)
    report = check_data(tmp_path)
    assert [part.source for part in report.parts] == [str(tmp_path / "train"), str(tmp_path / "val")]
    assert (report.n_files, report.n_bad, report.image_shape) == (21, 3, (N, N)) and not report.ok
    assert report.class_counts == {"no": 6, "sphere": 6, "vort": 6}
    assert report.seconds > 0 and report.files_per_s > 0
    _assert_names_all("\n".join(report.bad), bad)
    assert check_data(tmp_path, ["val"]).ok
    h5 = tmp_path / "sim.h5"
    _make_h5(h5)
    with h5py.File(h5, "a") as f:
        f["val"]["images"][2, 0, 0] = np.inf
    h5_report = check_data(h5)
    assert [p.source for p in h5_report.parts] == [f"{h5}:/train", f"{h5}:/val"]
    assert h5_report.bad == (f"{h5}:/val/images[2]: 1 NaN/inf pixels; expected finite values",)
    (tmp_path / "val" / "sphere").rename(tmp_path / "val" / "other")  # a split that cannot be read: one problem
    broken = check_data(tmp_path, ["val"])
    assert broken.n_bad == 1 and "no class folder for ['sphere']; found ['no', 'other', 'vort']" in broken.bad[0]
    with pytest.raises(DataError, match="does not exist"):
        check_data(tmp_path / "nope")


def test_check_data_command(tmp_path, capsys):
    bad = _three_bad(tmp_path / "bad")
    assert main(["check-data", str(tmp_path / "bad")]) == 1
    out = capsys.readouterr().out
    assert "3 problem(s)" in out and "15 files, 3 bad, images 8x8" in out
    _assert_names_all(out, bad)
    assert main(["check-data", str(tmp_path / "bad"), "--max-listed", "1"]) == 1
    assert "... and 2 more" in capsys.readouterr().out
    _make_folder(tmp_path / "good", n=2, split=None)
    assert main(["check-data", str(tmp_path / "good")]) == 0
    out = capsys.readouterr().out
    assert "6 files, 0 bad" in out and "files/s" in out and "all files good" in out
