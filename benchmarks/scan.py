"""Files/s of the up-front data check: ``check_data`` and building a cached dataset, ``.npy`` folder and HDF5 file.

    python benchmarks/scan.py [--n-files 3000] [--sizes 64 150] [--repeats 3]

Per image size, writes ``--n-files`` random float32 images (a third per class) into a temporary folder,
``train/{no,sphere,vort}/*.npy`` with ``np.save``, and into an HDF5 file in the simulator's layout (file attribute
``classes``, group ``train`` with ``images`` (N, H, W) float32 stored one chunk per image as the simulator writes it,
``labels`` (N,) int64). Then times, wall clock, median of ``--repeats`` runs, with one torch thread:
``d4lenspinn.data.check_data`` on the split, and building a fresh ``LensingImageDataset`` with ``cache=True``
(``from_folder`` / ``from_hdf5``: indexing, reading and checking every image, filling the cache). The files have
just been written, so they come from the OS page cache: from a cold disk the scan runs at the disk's speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
from _machine import describe_machine

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data import check_data
from d4lenspinn.data.datasets import LensingImageDataset
from d4lenspinn.report import markdown_table


def _write(root: Path, size: int, n_files: int, seed: int = 0) -> tuple[Path, Path]:
    """The ``.npy`` folder and the HDF5 file of ``n_files`` random ``size x size`` images; returns their paths."""
    rng = np.random.default_rng(seed)
    folder, h5 = root / f"npy{size}", root / f"images{size}.h5"
    labels = np.arange(n_files, dtype=np.int64) % len(CLASS_NAMES)
    for label, name in enumerate(CLASS_NAMES):
        (folder / "train" / name).mkdir(parents=True)
        for i in range(int((labels == label).sum())):
            np.save(folder / "train" / name / f"img{i:05d}.npy", rng.random((size, size), dtype=np.float32))
    with h5py.File(h5, "w") as f:
        f.attrs["classes"] = list(CLASS_NAMES)
        group = f.create_group("train")
        images = group.create_dataset("images", (n_files, size, size), dtype="float32", chunks=(1, size, size))
        for start in range(0, n_files, 500):
            stop = min(start + 500, n_files)
            images[start:stop] = rng.random((stop - start, size, size), dtype=np.float32)
        group.create_dataset("labels", data=labels)
    return folder, h5


def _steps(folder: Path, h5: Path) -> dict[str, Callable[[], object]]:
    """What is timed, by its row name in docs/data.md."""
    return {
        "`check_data`, `.npy` folder": lambda: check_data(folder, ["train"]),
        "`check_data`, HDF5 file (one row per read)": lambda: check_data(h5, ["train"]),
        "building a cached `LensingImageDataset` (indexing, check, cache), `.npy`": (
            lambda: LensingImageDataset.from_folder(folder, "train", cache=True)
        ),
        "the same, HDF5": lambda: LensingImageDataset.from_hdf5(h5, "train", cache=True),
    }


def _files_per_s(step: Callable[[], object], n_files: int, repeats: int) -> float:
    """``n_files`` over the median wall time of ``repeats`` calls of ``step()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return n_files / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=3000, help="images per size (a third per class)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 150], help="image sides in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"machine: {describe_machine(torch.device('cpu'))}, load average {os.getloadavg()[0]:.1f}")
    print(f"{args.n_files} random float32 images per size, median of {args.repeats} runs, files/s (OS page cache)")
    rows: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for what, step in _steps(*_write(Path(tmp), size, args.n_files)).items():
                rate = _files_per_s(step, args.n_files, args.repeats)
                rows.setdefault(what, []).append(f"{rate:,.0f} files/s")
    sizes = [f"{size} x {size}" for size in args.sizes]
    table = [[what, *cells] for what, cells in rows.items()]
    print(markdown_table(["what", *sizes], table, align="l" * (1 + len(sizes))))


if __name__ == "__main__":
    main()
