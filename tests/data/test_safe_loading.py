"""Object ``.npy`` files never run code: the restricted unpickler in every command that reads data."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.cli import main
from d4lenspinn.data.formats import DataError
from d4lenspinn.data.npy import load_npy

N = 8  # image side of the data folders (the model's size is irrelevant: the scan fails first)
_REFUSED = "object .npy holds a pickled posix.mkdir, not numpy arrays and numbers; refused (nothing was run)"


class _MkdirOnLoad:
    """Unpickling this calls ``os.mkdir(marker)``: what a hostile data file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _save_object_array(path: Path, *elements) -> None:
    """Write an object ``.npy`` as DeepLense Model II does (``[image, mass]``); writing is the only pickling here."""
    obj = np.empty(len(elements), dtype=object)
    for i, element in enumerate(elements):
        obj[i] = element
    np.save(path, obj, allow_pickle=True)


def _hostile_folder(root: Path, split: str, marker: Path) -> Path:
    """``root/split/<class>/`` with two good images per class and ``vort/payload.npy``; returns the payload file."""
    rng = np.random.default_rng(0)
    for name in CLASS_NAMES:
        (root / split / name).mkdir(parents=True)
        for i in range(2):
            np.save(root / split / name / f"img{i}.npy", rng.random((N, N), dtype=np.float32))
    payload = root / split / "vort" / "payload.npy"
    _save_object_array(payload, _MkdirOnLoad(marker), 1.0)
    return payload


def test_the_payload_is_live_under_plain_pickle(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_MkdirOnLoad(marker)))  # what np.load(allow_pickle=True) would have done
    assert marker.is_dir()


def test_legitimate_deeplense_object_arrays_load(tmp_path):
    image = np.arange(N * N, dtype=np.float32).reshape(N, N)
    for i, mass in enumerate((1.5e9, np.float64(2.5e9), [1e9, 2e9], (3, "axion"))):
        _save_object_array(tmp_path / f"{i}.npy", image, mass)
        np.testing.assert_array_equal(load_npy(tmp_path / f"{i}.npy"), image)
    _save_object_array(tmp_path / "label_first.npy", 2, image.astype(np.float64))
    loaded = load_npy(tmp_path / "label_first.npy")
    assert loaded.dtype == np.float64 and np.array_equal(loaded, image)


def test_payload_is_refused_naming_the_file_and_the_global(tmp_path):
    marker = tmp_path / "ran"
    _save_object_array(tmp_path / "payload.npy", _MkdirOnLoad(marker), 1.0)
    with pytest.raises(DataError) as error:
        load_npy(tmp_path / "payload.npy")
    assert str(error.value) == f"{tmp_path / 'payload.npy'}: {_REFUSED}"
    assert not marker.exists()


def test_a_pickled_non_array_is_refused(tmp_path):
    _save_object_array(tmp_path / "dict.npy", {"image": 1}, 1.0)  # a dict is plain data but holds no image
    with pytest.raises(DataError, match=r"dict\.npy: expected an object array \[image, mass\] with one image"):
        load_npy(tmp_path / "dict.npy")
    _save_object_array(tmp_path / "path.npy", Path("x"), 1.0)
    with pytest.raises(DataError, match=r"path\.npy: object \.npy holds a pickled pathlib\.PosixPath"):
        load_npy(tmp_path / "path.npy")


def test_check_data_and_train_refuse_the_payload(tmp_path, capsys):
    marker = tmp_path / "ran"
    payload = _hostile_folder(tmp_path / "data", "train", marker)
    assert main(["check-data", str(tmp_path / "data")]) == 1
    assert f"{payload}: {_REFUSED}" in capsys.readouterr().out
    argv = ["train", "--set", f"data.source={tmp_path / 'data'}", "--set", f"out={tmp_path / 'run'}"]
    assert main([*argv, "--set", "device=cpu"]) == 2
    assert f"{payload}: {_REFUSED}" in capsys.readouterr().err
    assert not marker.exists()


def test_predict_evaluate_and_interp_refuse_the_payload(tiny_run, tmp_path, capsys):
    marker = tmp_path / "ran"
    payload = _hostile_folder(tmp_path / "data", "val", marker)
    checkpoint = str(tiny_run / "best.pt")
    commands = {
        "predict": ["predict", "--checkpoint", checkpoint, str(payload), "--out", str(tmp_path / "p.csv")],
        "evaluate": ["evaluate", "--checkpoint", checkpoint, "--data", str(tmp_path / "data")],
        "interp": ["interp", "--checkpoint", checkpoint, "--out", str(tmp_path / "interp")],
    }
    commands["evaluate"] += ["--out", str(tmp_path / "evaluation")]
    commands["interp"] += ["--data", str(tmp_path / "data"), "--studies", "equivariance"]
    for name, argv in commands.items():
        assert main(argv) == 2, name
        assert f"{payload}: {_REFUSED}" in capsys.readouterr().err, name
        assert not marker.exists(), name
    assert not (tmp_path / "p.csv").exists()


def test_detect_refuses_the_payload(tmp_path, capsys):
    marker = tmp_path / "ran"
    payload = _hostile_folder(tmp_path / "data", "val", marker)
    argv = ["detect", str(tmp_path / "data"), "--pixel-scale", "0.1", "--psf-fwhm", "0.2", "--stride", "4"]
    assert main([*argv, "--out", str(tmp_path / "d.csv")]) == 2
    assert f"{payload}: {_REFUSED}" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "d.csv").exists()
