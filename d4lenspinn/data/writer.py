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

Memory stays flat in the number of images: the lenses of a class are drawn a chunk at a time
(:class:`~d4lenspinn.data.simulator.LensStream`, the same values as one draw), once for the truth table and once
for the images. Before anything is written, the counts are checked, a folder that is not empty and holds no
``manifest.json`` is refused, and so is a disk without the estimated free space. Ctrl-C raises
:class:`SimulationInterrupted` (a ``KeyboardInterrupt``) saying how many images are on disk.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import __version__
from ..classes import CLASS_NAMES, SUBHALOS
from ..io import atomic_path, write_text
from ..progress import progress_bar
from .presets import SimulationPreset
from .simulator import LensSample, LensStream, render_images, sample_lenses, stream_seed

__all__ = ["simulate_dataset", "check_simulation", "read_truth", "SimulationInterrupted", "SPLITS"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "val")
_FORMATS = ("npy", "h5")


class SimulationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`simulate_dataset`: ``written`` of ``total`` images are on disk in ``out``; calling again
    with the same arguments resumes."""

    def __init__(self, out: Path, written: int, total: int) -> None:
        super().__init__(f"{written} of {total} images written into {out}")
        self.out, self.written, self.total = out, written, total


def _save_npy(path: Path, image: np.ndarray) -> None:
    # ".x.npy.tmp": a temporary file left by a killed run never looks like an image to the readers
    with atomic_path(path, keep_suffix=False) as tmp, open(tmp, "wb") as f:
        np.save(f, image)


def _file_name(split: str, label: int, index: int) -> str:
    name = CLASS_NAMES[label]
    return f"{split}/{name}/{name}_{index:06d}.npy"


def _class_lenses(preset: SimulationPreset, seed: int, split: str, label: int, count: int) -> LensStream:
    """The lenses of one class of one split, a chunk at a time: one random stream per (split, class)."""
    generator = torch.Generator().manual_seed(stream_seed(seed, split, CLASS_NAMES[label]))
    return LensStream(preset, label, count, generator)


def _batches(lenses: LensStream, batch_size: int) -> Iterator[tuple[int, LensSample]]:
    """``(index of the first lens, lenses)`` of consecutive batches of ``batch_size`` (the last one shorter)."""
    pending, first = None, 0
    for chunk in lenses:
        pending = chunk if pending is None else LensSample.concatenate([pending, chunk])
        while len(pending) >= batch_size:
            yield first, pending.select(slice(0, batch_size))
            pending, first = pending.select(slice(batch_size, None)), first + batch_size
    if pending is not None and len(pending):
        yield first, pending


def _all_batches(preset: SimulationPreset, seed: int, counts: dict[str, dict[str, int]], batch_size: int):
    """``(split, label, index of the first lens within its class, lenses)`` of every batch, split by split, class by
    class in CLASS_NAMES order."""
    for split in SPLITS:
        for label, name in enumerate(CLASS_NAMES):
            for first, lenses in _batches(_class_lenses(preset, seed, split, label, counts[split][name]), batch_size):
                yield split, label, first, lenses


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


def _write_truth(group: h5py.Group, preset: SimulationPreset, seed: int, split: str, counts: dict[str, int]) -> None:
    """Every lens of ``split`` and its file name into ``group``, a chunk at a time."""
    total, offset = sum(counts.values()), 0
    for label, name in enumerate(CLASS_NAMES):
        first = 0
        for lenses in _class_lenses(preset, seed, split, label, counts[name]):
            for field, values in lenses.to_numpy().items():
                if field not in group:
                    group.create_dataset(field, (total, *values.shape[1:]), dtype=values.dtype)
                group[field][offset : offset + len(lenses)] = values
            if "file" not in group:  # created after the parameters, as the file lists them
                group.create_dataset("file", (total,), dtype=h5py.string_dtype())
            files = [_file_name(split, label, first + i) for i in range(len(lenses))]
            group["file"][offset : offset + len(lenses)] = files
            offset, first = offset + len(lenses), first + len(lenses)


class _NpySink:
    """One ``.npy`` file per image; a batch is done when all its files exist."""

    def __init__(self, out: Path) -> None:
        self.out = out
        for split in SPLITS:
            for name in CLASS_NAMES:
                (out / split / name).mkdir(parents=True, exist_ok=True)

    def _paths(self, split: str, label: int, first: int, count: int) -> list[Path]:
        return [self.out / _file_name(split, label, first + i) for i in range(count)]

    def done(self, split: str, label: int, first: int, count: int) -> bool:
        return all(path.exists() for path in self._paths(split, label, first, count))

    def write(self, split: str, label: int, first: int, images: np.ndarray) -> None:
        for path, image in zip(self._paths(split, label, first, len(images)), images, strict=True):
            _save_npy(path, image)

    def close(self) -> None:
        pass


class _HDF5Sink:
    """One HDF5 file; a per-image ``rendered`` flag, flushed after every batch, records progress."""

    def __init__(self, path: Path, preset: SimulationPreset, seed: int, counts: dict[str, dict[str, int]]) -> None:
        n = preset.n_pixels
        self.offsets = {split: _class_offsets(counts[split]) for split in SPLITS}
        if not path.exists():
            with atomic_path(path, keep_suffix=False) as tmp, h5py.File(tmp, "w") as f:
                f.attrs["classes"] = list(CLASS_NAMES)
                for split in SPLITS:
                    count = sum(counts[split].values())
                    labels = np.repeat(np.arange(len(CLASS_NAMES)), [counts[split][c] for c in CLASS_NAMES])
                    group = f.create_group(split)
                    group.create_dataset("images", (count, n, n), dtype="float32", chunks=(1, n, n))
                    group.create_dataset("labels", data=labels.astype(np.int64))
                    group.create_dataset("rendered", data=np.zeros(count, dtype=bool))
                    _write_truth(group.create_group("truth"), preset, seed, split, counts[split])
        self.file = h5py.File(path, "r+")

    def done(self, split: str, label: int, first: int, count: int) -> bool:
        start = self.offsets[split][label] + first
        return bool(self.file[split]["rendered"][start : start + count].all())

    def write(self, split: str, label: int, first: int, images: np.ndarray) -> None:
        group, start = self.file[split], self.offsets[split][label] + first
        group["images"][start : start + len(images)] = images
        group["rendered"][start : start + len(images)] = True
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _class_offsets(counts: dict[str, int]) -> list[int]:
    """Index of each class's first image in its split (classes in CLASS_NAMES order)."""
    return [sum(counts[c] for c in CLASS_NAMES[:label]) for label in range(len(CLASS_NAMES))]


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


def _check_arguments(out: Path, n_per_class: int, n_val_per_class: int | None, fmt: str, batch_size: int) -> None:
    """Refuse bad counts, a format we do not write, and an ``out`` that is a file or holds something else."""
    if fmt not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {fmt!r}")
    for name, value in (("n_per_class", n_per_class), ("n_val_per_class", n_val_per_class), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file; name a new or empty folder (--out)")
    if out.is_dir() and not (out / "manifest.json").exists() and any(out.iterdir()):
        raise ValueError(
            f"output folder {out} is not empty and holds no simulation (no manifest.json); name a new or empty "
            f"folder (--out), or empty this one"
        )


def _estimated_bytes(preset: SimulationPreset, counts: dict[str, dict[str, int]], fmt: str) -> int:
    """Disk space a whole simulation takes: images (.npy files rounded to 4 KiB blocks) and the truth table(s)."""
    n_images = sum(sum(split.values()) for split in counts.values())
    image = 4 * preset.n_pixels**2
    image = -(-(image + 128) // 4096) * 4096 if fmt == "npy" else image + 1
    one_lens = sample_lenses(preset, SUBHALOS, 1, torch.Generator().manual_seed(0)).to_numpy()
    truth = sum(values.nbytes for values in one_lens.values()) + 64  # + the file name
    return n_images * (image + truth * (2 if fmt == "h5" else 1))


def _check_free_space(out: Path, needed: int) -> None:
    """Raise ``OSError`` when ``out``'s file system has fewer than ``needed`` bytes free (beyond what ``out`` holds)."""
    present = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())  # 0 for a folder not made yet
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if needed - present > free:
        raise OSError(
            f"not enough free space in {out}: the simulation needs about {needed - present:,} more bytes "
            f"({needed:,} in all), {free:,} are free; free some space or choose another folder (--out)"
        )


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

    Returns ``out``. Memory does not grow with the number of images (lenses are drawn a chunk at a time). Raises
    ``ValueError`` for bad counts, an ``out`` that holds anything but a simulation with the same arguments, and
    ``OSError`` when the disk lacks the estimated space. Ctrl-C raises :class:`SimulationInterrupted`; calling again
    with the same arguments resumes.
    """
    out = Path(out)
    _check_arguments(out, n_per_class, n_val_per_class, fmt, batch_size)
    manifest = _manifest(preset, n_per_class, n_val_per_class, seed, fmt, batch_size)
    counts = manifest["counts"]
    _check_manifest(out / "manifest.json", manifest)
    _check_free_space(out, _estimated_bytes(preset, counts, fmt))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))

    total, written = sum(sum(split.values()) for split in counts.values()), 0
    try:
        if not (out / "truth.h5").exists():
            with atomic_path(out / "truth.h5", keep_suffix=False) as tmp, h5py.File(tmp, "w") as f:
                f.attrs["classes"] = list(CLASS_NAMES)
                for split in SPLITS:
                    _write_truth(f.create_group(split), preset, seed, split, counts[split])
        sink = _NpySink(out) if fmt == "npy" else _HDF5Sink(out / "dataset.h5", preset, seed, counts)
        try:
            with progress_bar(total=total, desc=f"simulate {preset.name}", unit="img", disable=not progress) as bar:
                for split, label, first, lenses in _all_batches(preset, seed, counts, batch_size):
                    if not sink.done(split, label, first, len(lenses)):
                        noise = stream_seed(seed, split, CLASS_NAMES[label], "noise", first // batch_size)
                        images = render_images(lenses, preset, torch.Generator().manual_seed(noise), device=device)
                        sink.write(split, label, first, images[:, 0].numpy())
                    written += len(lenses)
                    bar.update(len(lenses))
        finally:
            sink.close()
    except KeyboardInterrupt as interrupt:
        raise SimulationInterrupted(out, written, total) from interrupt
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
