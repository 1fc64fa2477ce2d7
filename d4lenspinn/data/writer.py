"""Write a simulated dataset to disk in the DeepLense layout (or one HDF5 file), resumably.

Layout written by :func:`simulate_dataset` into ``out``::

    manifest.json                    preset, seed, counts, format, package version, complete flag
    truth.h5                         per split: every LensSample field, the label and the image file name
    train/{no,sphere,vort}/*.npy     float32 (n, n) images in [0, 1]    (format "npy")
    val/{no,sphere,vort}/*.npy
    dataset.h5                       train/ and val/ groups with images, labels, truth  (format "h5")

Every image is a deterministic function of ``(seed, batch_size, split, class, index)``: parameters come from one
random stream per (split, class) and noise from one stream per batch of that class. Re-running with the same
arguments therefore skips the batches already on disk and produces exactly what an uninterrupted run would have.
Files are written to a temporary name and renamed, so an interruption never leaves a truncated image.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import __version__
from ..classes import CLASS_NAMES
from ..io import atomic_path, write_text
from ..progress import progress_bar
from .presets import SimulationPreset
from .simulator import LensSample, render_images, sample_lenses, stream_seed

__all__ = ["simulate_dataset", "check_simulation", "read_truth", "SPLITS"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "val")
_FORMATS = ("npy", "h5")


def _save_npy(path: Path, image: np.ndarray) -> None:
    # ".x.npy.tmp": a temporary file left by a killed run never looks like an image to the readers
    with atomic_path(path, keep_suffix=False) as tmp, open(tmp, "wb") as f:
        np.save(f, image)


def _file_name(split: str, label: int, index: int) -> str:
    name = CLASS_NAMES[label]
    return f"{split}/{name}/{name}_{index:06d}.npy"


def _split_parameters(preset: SimulationPreset, seed: int, split: str, counts: dict[str, int]) -> LensSample:
    """All lenses of one split, class by class in CLASS_NAMES order."""
    parts = [
        sample_lenses(preset, label, counts[name], torch.Generator().manual_seed(stream_seed(seed, split, name)))
        for label, name in enumerate(CLASS_NAMES)
    ]
    return LensSample.concatenate(parts)


def _batches(counts: dict[str, dict[str, int]], batch_size: int):
    """``(split, class name, batch index within the class, first, last)`` over every split, class by class."""
    for split in SPLITS:
        start = 0
        for name in CLASS_NAMES:
            stop = start + counts[split][name]
            for batch_index, first in enumerate(range(start, stop, batch_size)):
                yield split, name, batch_index, first, min(first + batch_size, stop)
            start = stop


def _check_manifest(path: Path, manifest: dict) -> None:
    """Refuse to resume into a directory that holds a different simulation."""
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    if isinstance(previous.get("preset"), dict):  # fields added to presets later read as their defaults
        previous["preset"] = json.loads(json.dumps(asdict(SimulationPreset.from_dict(previous["preset"]))))
    for key in ("preset", "seed", "counts", "format", "batch_size"):
        if previous.get(key) != manifest[key]:
            raise ValueError(
                f"{path} describes a different simulation ({key}: {previous.get(key)!r} here, {manifest[key]!r} "
                f"requested); use another directory (--out, or data.root in a run config) or delete this one"
            )


def _write_truth(group: h5py.Group, params: LensSample, files: list[str]) -> None:
    for name, values in params.to_numpy().items():
        group.create_dataset(name, data=values)
    group.create_dataset("file", data=np.array(files, dtype=h5py.string_dtype()))


class _NpySink:
    """One ``.npy`` file per image; a batch is done when all its files exist."""

    def __init__(self, out: Path, files: dict[str, list[str]]) -> None:
        self.out, self.files = out, files
        for split_files in files.values():
            for folder in {Path(f).parent for f in split_files}:
                (out / folder).mkdir(parents=True, exist_ok=True)

    def done(self, split: str, start: int, stop: int) -> bool:
        return all((self.out / f).exists() for f in self.files[split][start:stop])

    def write(self, split: str, start: int, images: np.ndarray) -> None:
        for offset, image in enumerate(images):
            _save_npy(self.out / self.files[split][start + offset], image)

    def close(self) -> None:
        pass


class _HDF5Sink:
    """One HDF5 file; a per-image ``rendered`` flag, flushed after every batch, records progress."""

    def __init__(self, path: Path, params: dict[str, LensSample], files: dict[str, list[str]], n: int) -> None:
        if not path.exists():
            with atomic_path(path, keep_suffix=False) as tmp, h5py.File(tmp, "w") as f:
                f.attrs["classes"] = list(CLASS_NAMES)
                for split, split_params in params.items():
                    count = len(split_params)
                    group = f.create_group(split)
                    group.create_dataset("images", (count, n, n), dtype="float32", chunks=(1, n, n))
                    group.create_dataset("labels", data=split_params.label.numpy())
                    group.create_dataset("rendered", data=np.zeros(count, dtype=bool))
                    _write_truth(group.create_group("truth"), split_params, files[split])
        self.file = h5py.File(path, "r+")

    def done(self, split: str, start: int, stop: int) -> bool:
        return bool(self.file[split]["rendered"][start:stop].all())

    def write(self, split: str, start: int, images: np.ndarray) -> None:
        group = self.file[split]
        group["images"][start : start + len(images)] = images
        group["rendered"][start : start + len(images)] = True
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _manifest(preset, n_per_class: int, n_val_per_class: int | None, seed: int, fmt: str, batch_size: int) -> dict:
    """The manifest of a simulation as it reads back from JSON (tuples become lists); ``complete`` is False."""
    n_val = max(1, n_per_class // 4) if n_val_per_class is None else n_val_per_class
    counts = {"train": dict.fromkeys(CLASS_NAMES, n_per_class), "val": dict.fromkeys(CLASS_NAMES, n_val)}
    manifest = {
        "preset": asdict(preset),
        "seed": seed,
        "counts": counts,
        "format": fmt,
        "batch_size": batch_size,
        "package_version": __version__,
        "complete": False,
    }
    return json.loads(json.dumps(manifest))


def check_simulation(
    out: str | Path,
    preset: SimulationPreset,
    n_per_class: int,
    n_val_per_class: int | None = None,
    seed: int = 0,
    fmt: str = "npy",
    batch_size: int = 64,
) -> None:
    """Raise ``ValueError`` when ``out`` holds a simulation made with other arguments than these."""
    _check_manifest(Path(out) / "manifest.json", _manifest(preset, n_per_class, n_val_per_class, seed, fmt, batch_size))


def simulate_dataset(
    out: str | Path,
    preset: SimulationPreset,
    n_per_class: int,
    n_val_per_class: int | None = None,
    seed: int = 0,
    fmt: str = "npy",
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Simulate ``n_per_class`` training and ``n_val_per_class`` (default a quarter) validation images per class.

    Returns ``out``. Interrupting and calling again with the same arguments resumes; different arguments on an
    existing directory raise ``ValueError``.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {fmt!r}")
    if n_per_class < 1 or batch_size < 1:
        raise ValueError(f"n_per_class and batch_size must be >= 1, got {n_per_class} and {batch_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(preset, n_per_class, n_val_per_class, seed, fmt, batch_size)
    counts = manifest["counts"]
    _check_manifest(out / "manifest.json", manifest)
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))

    params = {split: _split_parameters(preset, seed, split, counts[split]) for split in SPLITS}
    files = {
        split: [
            _file_name(split, label, i) for label, name in enumerate(CLASS_NAMES) for i in range(counts[split][name])
        ]
        for split in SPLITS
    }
    if not (out / "truth.h5").exists():
        with atomic_path(out / "truth.h5", keep_suffix=False) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["classes"] = list(CLASS_NAMES)
            for split in SPLITS:
                _write_truth(f.create_group(split), params[split], files[split])

    sink = _NpySink(out, files) if fmt == "npy" else _HDF5Sink(out / "dataset.h5", params, files, preset.n_pixels)
    total = sum(len(p) for p in params.values())
    try:
        with progress_bar(total=total, desc=f"simulate {preset.name}", unit="img", disable=not progress) as bar:
            for split, name, batch_index, first, last in _batches(counts, batch_size):
                if not sink.done(split, first, last):
                    noise = torch.Generator().manual_seed(stream_seed(seed, split, name, "noise", batch_index))
                    images = render_images(params[split].select(slice(first, last)), preset, noise, device=device)
                    sink.write(split, first, images[:, 0].numpy())
                bar.update(last - first)
    finally:
        sink.close()
    manifest["complete"] = True
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    logger.info("simulated %d images into %s", total, out)
    return out


def read_truth(path: str | Path, split: str = "train") -> tuple[LensSample, list[str]]:
    """The parameters of every image of ``split`` in a ``truth.h5`` (or ``dataset.h5``) and their file names."""
    with h5py.File(path, "r") as f:
        group = f[split]["truth"] if "truth" in f[split] else f[split]
        arrays = {key: group[key][()] for key in group if key != "file"}
        files = [name.decode() if isinstance(name, bytes) else name for name in group["file"][()]]
    return LensSample.from_numpy(arrays), files
