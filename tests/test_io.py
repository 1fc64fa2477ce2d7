"""Atomic writes: the target appears complete or not at all, and no temporary file is left behind."""

import pytest

from d4lenspinn.io import atomic_path, write_bytes, write_text


def test_write_text_and_bytes_replace_atomically(tmp_path):
    path = write_text(tmp_path / "sub" / "report.md", "new\n")
    assert path.read_text() == "new\n"
    write_bytes(path, b"again")
    assert path.read_bytes() == b"again" and sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_an_error_keeps_the_previous_version(tmp_path):
    path = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_temporary_name_keeps_the_suffix_unless_asked_not_to(tmp_path):
    with atomic_path(tmp_path / "roc.png") as tmp:
        assert tmp.name == ".roc.tmp.png"
        tmp.write_bytes(b"")
    with atomic_path(tmp_path / "x_000001.npy", keep_suffix=False) as tmp:
        assert tmp.name == ".x_000001.npy.tmp" and tmp.suffix != ".npy"
        tmp.write_bytes(b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "x_000001.npy"]
