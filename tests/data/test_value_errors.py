"""Data whose values or layout the readers cannot use: one clear error naming the file (issue 18, data part)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.cli import main
from d4lenspinn.data.formats import DataError, as_image
from d4lenspinn.data.inputs import list_input_images, read_input_image
from d4lenspinn.data.scan import check_data

N = 64  # the tiny run's image size, so that only the values are wrong


def _huge_float64() -> np.ndarray:
    image = np.ones((N, N))
    image[3, 4] = 1e300  # finite in float64, inf once cast to float32
    return image


def _span_float32() -> np.ndarray:
    image = np.zeros((N, N), np.float32)
    image[0, 0], image[0, 1] = -3e38, 3e38  # each finite in float32; max - min is not
    return image


def test_float64_beyond_float32_is_named_as_overflow(tmp_path):
    with pytest.raises(DataError) as error:
        as_image(_huge_float64(), "huge.npy", None)
    assert str(error.value) == "huge.npy: values overflow float32 (range 1..1e+300; float32 holds +-3.4e38)"
    with pytest.raises(DataError, match=r"small.npy: values overflow float32 \(range -1e\+300\.\.-1;"):
        as_image(-_huge_float64(), "small.npy", None)
    as_image(np.full((N, N), 3.4e38), "largest.npy", None)  # the float32 maximum itself fits


def test_float32_spanning_the_whole_range_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as error:
        as_image(_span_float32(), "span.npy", None)
    assert str(error.value) == (
        "span.npy: values overflow float32 when normalised (range -3e+38..3e+38 spans more than 3.4e38)"
    )


def test_folder_scan_reports_overflow_not_nan(tmp_path):
    for name in CLASS_NAMES:
        (tmp_path / "train" / name).mkdir(parents=True)
        np.save(tmp_path / "train" / name / "a.npy", np.zeros((N, N), np.float32))
    np.save(tmp_path / "train" / "no" / "huge.npy", _huge_float64())
    report = check_data(tmp_path)
    assert report.n_bad == 1 and report.bad[0].startswith(f"{tmp_path / 'train' / 'no' / 'huge.npy'}: values overflow")


def test_predict_names_the_file_for_overflowing_values(tiny_run, tmp_path, capsys):
    np.save(tmp_path / "huge.npy", _huge_float64())
    np.save(tmp_path / "span.npy", _span_float32())
    argv = ["predict", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(tmp_path / "p.csv")]
    assert main([*argv, str(tmp_path / "huge.npy"), str(tmp_path / "span.npy")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'huge.npy'}: values overflow float32 (range" in err and "NaN/inf" not in err
    assert f"{tmp_path / 'span.npy'}: values overflow float32 when normalised" in err
    assert "expected scalar type" not in err


def test_hdf5_without_an_image_dataset_names_what_it_holds(tmp_path, capsys):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_group("meta").create_dataset("labels", data=np.arange(3))
        f.create_dataset("masses", data=np.ones(3))
    (image,) = list_input_images([path])
    expected = (
        f"{path}: no image dataset (expected groups 'train', 'val' holding 'images'); "
        "it holds ['masses', 'meta', 'meta/labels']"
    )
    with pytest.raises(DataError) as error:
        read_input_image(image)
    assert str(error.value) == expected
    assert main(["check-data", str(path)]) == 2
    assert expected in capsys.readouterr().err


def test_data_root_naming_a_file_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "not_a_folder"
    root.write_text("x")
    argv = ["train", "--set", f"data.root={root}", "--set", f"out={tmp_path / 'run'}", "--set", "device=cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"data.root {root} is a file; expected the folder" in err and "Errno" not in err
    with pytest.raises(SystemExit) as exit_info:  # argparse checks the path before any work
        main(["check-data", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert f"no such file or directory: {tmp_path / 'missing'}" in capsys.readouterr().err
