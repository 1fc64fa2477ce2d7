"""Atomic writes: the target appears complete or not at all, no temporary file is left behind, concurrent writers
never share a temporary file, and a single-writer lock refuses a second process."""

import subprocess
import sys

import pytest

from d4lenspinn.io import WriterBusyError, atomic_path, exclusive_writer, write_bytes, write_text


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


def test_temporary_names_are_unique_and_keep_the_suffix_unless_asked_not_to(tmp_path):
    with atomic_path(tmp_path / "roc.png") as first, atomic_path(tmp_path / "roc.png") as second:
        assert first != second and first.parent == tmp_path
        assert first.name.startswith(".roc.tmp") and first.suffix == ".png"
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    with atomic_path(tmp_path / "x_000001.npy", keep_suffix=False) as tmp:
        assert tmp.name.startswith(".x_000001.npy.tmp") and tmp.suffix != ".npy"
        tmp.write_bytes(b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "x_000001.npy"]
    assert (tmp_path / "roc.png").read_bytes() == b"1"  # the outer block renamed last


def test_written_files_get_the_permissions_of_a_plain_open_not_owner_only(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    path = write_text(tmp_path / "a.txt", "x")
    assert path.stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_a_directory_where_a_file_is_wanted_is_refused_before_writing(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="out.csv is a directory"):
        write_text(tmp_path / "out.csv", "x")
    assert list((tmp_path / "out.csv").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


_WRITER = """
import sys
from d4lenspinn.io import write_text
path, char = sys.argv[1], sys.argv[2]
for _ in range(300):
    write_text(path, char * 200_000)
"""


def test_two_processes_writing_one_file_never_show_a_reader_a_truncated_file(tmp_path):
    path = tmp_path / "state.txt"
    write_text(path, "0" * 200_000)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), c], stderr=subprocess.PIPE) for c in "ab"]
    seen = set()
    while any(w.poll() is None for w in writers):
        text = path.read_text()
        assert len(text) == 200_000 and len(set(text)) == 1
        seen |= set(text)
    assert [w.wait() for w in writers] == [0, 0], [w.stderr.read().decode()[-500:] for w in writers]
    assert set(path.read_text()) <= {"a", "b"} and seen <= {"0", "a", "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.txt"]


_HOLDER = """
import sys, time
from d4lenspinn.io import exclusive_writer
with exclusive_writer(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_writer_process_is_refused_while_the_first_holds_the_file(tmp_path):
    out = tmp_path / "predictions.csv"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(WriterBusyError, match=r"another process is writing .*predictions.csv"):
            with exclusive_writer(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_writer(out):  # released when the holder died
        write_text(out, "rows\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]


def test_the_lock_is_exclusive_within_one_process_and_released_after_the_block(tmp_path):
    out = tmp_path / "x.csv"
    with exclusive_writer(out):
        assert (tmp_path / ".x.csv.lock").exists()
        with pytest.raises(WriterBusyError):
            with exclusive_writer(out):
                pass
    with exclusive_writer(out):
        pass
    assert list(tmp_path.iterdir()) == []


def test_without_fcntl_the_writer_is_not_serialised_but_still_writes(tmp_path, monkeypatch):
    import d4lenspinn.io as io_module

    monkeypatch.setattr(io_module, "fcntl", None)
    out = tmp_path / "x.csv"
    with exclusive_writer(out), exclusive_writer(out):
        write_text(out, "rows\n")
    assert out.read_text() == "rows\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
