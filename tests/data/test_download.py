"""Download-and-cache path, offline: `_fetch_from_drive` is replaced by a fake that serves a tiny archive."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from d4lenspinn.data import download as dl
from d4lenspinn.data.download import (
    DATASETS,
    DownloadError,
    cache_root,
    dataset_path,
    download_dataset,
)

NAME = "common_test_i"
FILES = [
    f"dataset/{split}/{cls}/{i}.npy" for split in ("train", "val") for cls in ("no", "sphere", "vort") for i in range(2)
]


def _npy_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).random((1, 4, 4), dtype=np.float32))
    return buf.getvalue()


@pytest.fixture()
def fixture_zip(tmp_path: Path) -> Path:
    """A tiny zip in the Common Test I layout, with the macOS clutter real archives carry."""
    path = tmp_path / "src" / "dataset.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for seed, name in enumerate(FILES):
            zf.writestr(name, _npy_bytes(seed))
        zf.writestr("__MACOSX/dataset/._train", b"junk")
    return path


class FakeDrive:
    """Stands in for `_fetch_from_drive`: copies `source` to the destination, or fails as told."""

    def __init__(self, source: Path | None, error: Exception | None = None, partial: bool = False):
        self.source, self.error, self.partial = source, error, partial
        self.calls: list[tuple[str, Path]] = []

    def __call__(self, drive_id: str, destination: Path) -> None:
        self.calls.append((drive_id, destination))
        if self.partial:
            destination.write_bytes(b"PK\x03\x04 truncated")
        if self.error is not None:
            raise self.error
        shutil.copyfile(self.source, destination)


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _serve(monkeypatch: pytest.MonkeyPatch, fake: FakeDrive) -> FakeDrive:
    monkeypatch.setattr(dl, "_fetch_from_drive", fake)
    return fake


def _assert_nothing_cached(cache: Path) -> None:
    target = cache / NAME
    assert dataset_path(NAME, cache) is None
    assert not (target / dl.MARKER).exists()
    assert not (target / DATASETS[NAME].filename).exists()
    assert not list(target.glob("*.part")) and not list(target.glob(".extract-*"))


def test_first_download_extracts_and_writes_marker(monkeypatch, cache, fixture_zip):
    fake = _serve(monkeypatch, FakeDrive(fixture_zip))
    root = download_dataset(NAME, cache_dir=cache)
    assert root == cache / NAME / "dataset"
    assert fake.calls[0][0] == DATASETS[NAME].drive_id and len(fake.calls) == 1
    for split in ("train", "val"):
        assert sorted(p.name for p in (root / split).iterdir()) == ["no", "sphere", "vort"]
    image = np.load(root / "train" / "sphere" / "1.npy")
    assert image.dtype == np.float32 and image.shape == (1, 4, 4)
    expected = np.load(io.BytesIO(_npy_bytes(FILES.index("dataset/train/sphere/1.npy"))))
    np.testing.assert_array_equal(image, expected)
    assert not (cache / NAME / "__MACOSX").exists() and not (root / "__MACOSX").exists()
    info = json.loads((cache / NAME / dl.MARKER).read_text())
    assert info["name"] == NAME and info["drive_id"] == DATASETS[NAME].drive_id and info["root"] == "dataset"
    assert info["sha256"] == dl._sha256(fixture_zip)
    assert dataset_path(NAME, cache) == root


def test_second_call_uses_cache_without_fetching(monkeypatch, cache, fixture_zip):
    fake = _serve(monkeypatch, FakeDrive(fixture_zip))
    first = download_dataset(NAME, cache_dir=cache)
    marker = (cache / NAME / dl.MARKER).read_text()
    (first / "sentinel").touch()  # a re-extraction would replace the folder and lose this
    offline = _serve(monkeypatch, FakeDrive(None, error=ConnectionError("must not be called")))
    assert download_dataset(NAME, cache_dir=cache) == first
    assert len(fake.calls) == 1 and offline.calls == []
    assert (first / "sentinel").exists() and (cache / NAME / dl.MARKER).read_text() == marker


def test_missing_marker_reextracts_from_cached_archive_without_fetching(monkeypatch, cache, fixture_zip):
    _serve(monkeypatch, FakeDrive(fixture_zip))
    root = download_dataset(NAME, cache_dir=cache)
    (cache / NAME / dl.MARKER).unlink()  # as if the process died between extraction and marker
    (root / "train" / "no" / "0.npy").unlink()
    assert dataset_path(NAME, cache) is None
    offline = _serve(monkeypatch, FakeDrive(None, error=ConnectionError("must not be called")))
    assert download_dataset(NAME, cache_dir=cache) == root
    assert offline.calls == [] and (root / "train" / "no" / "0.npy").is_file()


def test_force_downloads_again(monkeypatch, cache, fixture_zip):
    fake = _serve(monkeypatch, FakeDrive(fixture_zip))
    root = download_dataset(NAME, cache_dir=cache)
    (root / "train" / "no" / "0.npy").unlink()
    assert download_dataset(NAME, cache_dir=cache, force=True) == root
    assert len(fake.calls) == 2 and (root / "train" / "no" / "0.npy").is_file()


def test_corrupt_archive_is_deleted_then_good_call_succeeds(monkeypatch, cache, fixture_zip, tmp_path):
    corrupt = tmp_path / "corrupt.zip"
    data = bytearray(fixture_zip.read_bytes())
    offset = data.index(b"\x93NUMPY") + 20  # inside the first stored .npy file: bad CRC, intact directory
    data[offset : offset + 8] = b"XXXXXXXX"
    corrupt.write_bytes(bytes(data))
    _serve(monkeypatch, FakeDrive(corrupt))
    with pytest.raises(DownloadError, match="corrupt \\(bad CRC.*deleted.*--from-zip"):
        download_dataset(NAME, cache_dir=cache)
    _assert_nothing_cached(cache)
    _serve(monkeypatch, FakeDrive(fixture_zip))
    assert download_dataset(NAME, cache_dir=cache).joinpath("val", "vort", "0.npy").is_file()


def test_html_page_instead_of_archive_is_rejected(monkeypatch, cache, tmp_path):
    page = tmp_path / "quota.html"
    page.write_text("<html>Google Drive - quota exceeded</html>")
    _serve(monkeypatch, FakeDrive(page))
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_dataset(NAME, cache_dir=cache)
    _assert_nothing_cached(cache)


def test_interrupted_download_leaves_nothing_and_retry_succeeds(monkeypatch, cache, fixture_zip):
    fake = _serve(monkeypatch, FakeDrive(None, error=ConnectionError("connection reset"), partial=True))
    with pytest.raises(DownloadError, match="connection reset"):
        download_dataset(NAME, cache_dir=cache)
    assert fake.calls[0][1].name == "dataset.zip.part"
    _assert_nothing_cached(cache)
    _serve(monkeypatch, FakeDrive(fixture_zip))
    assert download_dataset(NAME, cache_dir=cache) == dataset_path(NAME, cache)


@pytest.mark.parametrize("error", [ConnectionError("Network is unreachable"), OSError("no route to host")])
def test_offline_failure_explains_how_to_proceed(monkeypatch, cache, error):
    _serve(monkeypatch, FakeDrive(None, error=error))
    with pytest.raises(DownloadError) as info:
        download_dataset(NAME, cache_dir=cache)
    message = str(info.value)
    assert f"--dataset {NAME} --from-zip" in message and "d4lenspinn simulate" in message
    assert f"https://drive.google.com/uc?id={DATASETS[NAME].drive_id}" in message
    assert str(error) in message and info.value.__cause__ is error
    _assert_nothing_cached(cache)


def test_from_zip_works_without_fetching(monkeypatch, cache, fixture_zip):
    fake = _serve(monkeypatch, FakeDrive(None, error=ConnectionError("must not be called")))
    root = download_dataset(NAME, cache_dir=cache, from_zip=fixture_zip)
    assert fake.calls == [] and root.joinpath("train", "no", "1.npy").is_file()
    assert fixture_zip.is_file()  # the user's file is copied, not moved
    assert dataset_path(NAME, cache) == root


def test_corrupt_from_zip_is_kept_and_reported(cache, tmp_path):
    bad = tmp_path / "dataset.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(DownloadError, match="from_zip"):
        download_dataset(NAME, cache_dir=cache, from_zip=bad)
    assert bad.read_bytes() == b"not a zip at all"
    _assert_nothing_cached(cache)
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        download_dataset(NAME, cache_dir=cache, from_zip=tmp_path / "missing.zip")


def test_failed_extraction_caches_nothing(monkeypatch, cache, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("dataset/train/no/0.npy", _npy_bytes(0))
        zf.writestr("../escaped.npy", _npy_bytes(1))
    _serve(monkeypatch, FakeDrive(evil))
    with pytest.raises(DownloadError, match="unsafe path"):
        download_dataset(NAME, cache_dir=cache)
    assert dataset_path(NAME, cache) is None and not (cache / NAME / dl.MARKER).exists()
    assert not (cache / NAME / "dataset").exists() and not list((cache / NAME).glob(".extract-*"))
    assert not (cache / "escaped.npy").exists()


def test_tar_archive_for_deeplensesim_layout(monkeypatch, cache, tmp_path):
    archive = tmp_path / "Model_II.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        for cls in ("no_sub", "cdm", "axion"):
            data = _npy_bytes(len(cls))
            member = tarfile.TarInfo(f"Model_II/{cls}/sim_0.npy")
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
    fake = _serve(monkeypatch, FakeDrive(archive))
    root = download_dataset("model_ii_train", cache_dir=cache)
    assert fake.calls[0][0] == DATASETS["model_ii_train"].drive_id
    assert root == cache / "model_ii_train" / "Model_II"
    assert sorted(p.name for p in root.iterdir()) == ["axion", "cdm", "no_sub"]


def test_unknown_name_lists_valid_names(cache):
    with pytest.raises(ValueError, match="Unknown dataset 'model_v'") as info:
        download_dataset("model_v", cache_dir=cache)
    assert all(name in str(info.value) for name in DATASETS)
    with pytest.raises(ValueError, match="common_test_i"):
        dataset_path("nope", cache)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(dl.CACHE_ENV, raising=False)
    assert cache_root() == Path.home() / ".cache" / "d4lenspinn"
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_env_cache_dir_is_honoured(monkeypatch, tmp_path, fixture_zip):
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "envcache"))
    _serve(monkeypatch, FakeDrive(fixture_zip))
    root = download_dataset(NAME)
    assert root == tmp_path / "envcache" / NAME / "dataset"
    assert dataset_path(NAME) == root and (tmp_path / "envcache" / NAME / dl.MARKER).is_file()


def test_registry_entries_are_consistent():
    assert {
        "common_test_i",
        "model_i_train",
        "model_i_test",
        "model_ii_train",
        "model_ii_test",
        "model_iii_train",
        "model_iii_test",
    } <= set(DATASETS)
    for name, spec in DATASETS.items():
        assert spec.name == name and len(spec.drive_id) == 33 and spec.url.endswith(spec.drive_id)
        assert spec.root and spec.layout and spec.classes and spec.source
    ct = DATASETS["common_test_i"]
    assert (ct.drive_id, ct.filename) == ("1ZEyNMEO43u3qhJAwJeBZxFBEYc_pVYZQ", "dataset.zip")
    assert ct.image_size == 150 and ct.approx_size == "1.13 GB"
    assert ct.classes == ("no", "sphere", "vort") and ct.layout == ("train", "val")
    assert DATASETS["model_iii_test"].classes == ("no_sub", "cdm", "axion")
    with pytest.raises(AttributeError):
        ct.name = "other"  # frozen
