"""Data: the lensing simulator and its writer, DeepLense-format readers, and the Drive download and cache.

The names below are imported from their submodules on first use (PEP 562), so ``import d4lenspinn.data`` (and the
command line's ``--help``) does not load torch or h5py until a reader, the simulator or the writer is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..classes import CLASS_ALIASES, CLASS_NAMES

if TYPE_CHECKING:
    from .datasets import DataError, DataSplits, LensingImageDataset, load_splits, split_indices
    from .download import DATASETS, DatasetSpec, DownloadError, cache_root, dataset_path, download_dataset
    from .prepare import prepare_data
    from .presets import PRESETS, SimulationPreset, get_preset
    from .scan import ScanReport, check_data
    from .simulator import LensSample, render_images, sample_lenses, true_convergence
    from .writer import read_truth, simulate_dataset

__all__ = [
    "CLASS_NAMES",
    "CLASS_ALIASES",
    "DataError",
    "DataSplits",
    "LensingImageDataset",
    "load_splits",
    "split_indices",
    "DATASETS",
    "DatasetSpec",
    "DownloadError",
    "cache_root",
    "dataset_path",
    "download_dataset",
    "PRESETS",
    "SimulationPreset",
    "get_preset",
    "LensSample",
    "sample_lenses",
    "render_images",
    "true_convergence",
    "simulate_dataset",
    "read_truth",
    "prepare_data",
    "check_data",
    "ScanReport",
]

_SUBMODULE: dict[str, str] = {
    **dict.fromkeys(("DataError", "DataSplits", "LensingImageDataset", "load_splits", "split_indices"), "datasets"),
    **dict.fromkeys(
        ("DATASETS", "DatasetSpec", "DownloadError", "cache_root", "dataset_path", "download_dataset"), "download"
    ),
    **dict.fromkeys(("PRESETS", "SimulationPreset", "get_preset"), "presets"),
    **dict.fromkeys(("LensSample", "sample_lenses", "render_images", "true_convergence"), "simulator"),
    **dict.fromkeys(("simulate_dataset", "read_truth"), "writer"),
    "prepare_data": "prepare",
    **dict.fromkeys(("check_data", "ScanReport"), "scan"),
}


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access and cache the name here."""
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
