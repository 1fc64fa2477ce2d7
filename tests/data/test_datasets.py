"""Tests for d4lenspinn.data.datasets: folder/HDF5 readers, validation, splits, D4 augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from d4lenspinn.data.datasets import (
    CLASS_NAMES,
    DataError,
    LensingImageDataset,
    load_splits,
    split_indices,
)
from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar

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


def test_object_arrays_refused_without_allow_pickle(tmp_path):
    _make_folder(tmp_path, names=("no_sub", "cdm", "axion"), n=2, object_class="axion")
    ds = LensingImageDataset.from_folder(tmp_path, allow_pickle=False)
    with pytest.raises(DataError, match=r"axion.img000\.npy.*allow_pickle"):
        ds[4]


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

    def augmented(seed):
        ds.augment = True
        loader = DataLoader(ds, batch_size=4, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return torch.cat([b[0] for b in loader])

    first = augmented(0)
    assert torch.equal(first, augmented(0)) and not torch.equal(first, augmented(1))
    for out, original in zip(first, torch.from_numpy(images)[:, None], strict=True):
        assert any(torch.equal(out, transform_scalar(original, g)) for g in D4_ELEMENTS)


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
        assert splits.train.augment and not splits.val.augment and not splits.test.augment
        for part, k in ((splits.train, 8), (splits.val, 1), (splits.test, 1)):
            assert part.class_counts() == {"no": k, "sphere": k, "vort": k}


def test_load_splits_official_uses_val_folder_as_test(tmp_path):
    _make_folder(tmp_path, n=10, split="train")
    val_written = _make_folder(tmp_path, n=3, split="val", seed=1)
    splits = load_splits(tmp_path, "official", seed=0, augment_train=False)
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


# -------------------------------------------------------------------------------------- augmentation, cache
def test_augmentation_applies_d4_elements_reproducibly(tmp_path):
    written = _make_folder(tmp_path, n=2)
    ds = LensingImageDataset.from_folder(tmp_path, augment=True, seed=7)
    used = set()
    for _ in range(10):
        for i, source in enumerate(ds.sources):
            original = torch.from_numpy(written[str(source)])[None]
            out, _ = ds[i]
            matches = [g for g in D4_ELEMENTS if torch.equal(out, transform_scalar(original, g))]
            assert matches, "augmented image is not a D4 transform of the original"
            used.add(matches[0])
    assert len(used) >= 6  # 60 draws from 8 elements; random pixels have no symmetry of their own

    def draws(seed):
        d = LensingImageDataset.from_folder(tmp_path, augment=True, seed=seed)
        return torch.stack([d[i % len(d)][0] for i in range(24)])

    assert torch.equal(draws(7), draws(7))
    assert not torch.equal(draws(7), draws(8))


def test_cache_keeps_images_and_is_not_mutable_from_outside(tmp_path):
    written = _make_folder(tmp_path, n=2)
    cached = LensingImageDataset.from_folder(tmp_path, cache=True)
    uncached = LensingImageDataset.from_folder(tmp_path, cache=False)
    assert cached.validate(progress=False) == 0
    uncached[0]
    path = cached.sources[0]
    Path(path).unlink()
    image, _ = cached[0]
    np.testing.assert_array_equal(image[0].numpy(), written[str(path)])
    image.fill_(-1.0)
    np.testing.assert_array_equal(cached[0][0][0].numpy(), written[str(path)])
    with pytest.raises(DataError, match="img000"):
        uncached[0]
    assert LensingImageDataset.from_folder(tmp_path)._cache_flag  # tiny set: cached by default
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
    ds = LensingImageDataset.from_folder(tmp_path)
    index = [str(s) for s in ds.sources].index(str(bad))
    with pytest.raises(DataError, match=f"zz_bad.npy.*{_BAD_FILES[kind][1]}"):
        ds[index]
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
    with pytest.warns(UserWarning, match=r"skipped 2 bad image\(s\) of 14"):
        ds = LensingImageDataset.from_folder(tmp_path, skip_bad=True)
    assert len(ds) == 12 and ds.image_shape == (N, N)
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
    ds = LensingImageDataset.from_hdf5(path)
    with pytest.raises(DataError, match=r"sim\.h5:/train/images\[3\].*NaN"):
        ds[3]
    ds.close()
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(LensingImageDataset.from_hdf5(path, skip_bad=True)) == 9
    with pytest.raises(DataError, match="group 'test'"):
        LensingImageDataset.from_hdf5(path, "test")
    with h5py.File(path, "a") as f:
        del f.attrs["classes"]
    with pytest.raises(DataError, match="sim.h5: missing file attribute 'classes'"):
        LensingImageDataset.from_hdf5(path)
    (tmp_path / "junk.h5").write_bytes(b"nope")
    with pytest.raises(DataError, match="junk.h5: could not be opened"):
        LensingImageDataset.from_hdf5(tmp_path / "junk.h5")
